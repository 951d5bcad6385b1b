DELETE FROM local_list_entries WHERE parcel_id IS NULL OR compartment IS NULL;
ALTER TABLE local_list_entries DROP COLUMN carrier_id;
ALTER TABLE local_list_entries ALTER COLUMN compartment SET NOT NULL;
ALTER TABLE local_list_entries ALTER COLUMN parcel_id SET NOT NULL;
DELETE FROM locker_journal WHERE outcome IN ('returned', 'deposited');
ALTER TABLE locker_journal DROP CONSTRAINT locker_journal_outcome_check;
ALTER TABLE locker_journal ADD CONSTRAINT locker_journal_outcome_check
    CHECK (outcome IN ('picked_up', 'already_moved', 'rejected', 'lost', 'counted'));
