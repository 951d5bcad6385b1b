-- The local code list carries four kinds of entry (docs/protocol.md §15.8): pickup codes,
-- return-collection codes and pre-advised deposits (each of one parcel and compartment), and
-- courier codes (one per carrier, no parcel, no compartment). `carrier_id` names a courier
-- entry's carrier.
ALTER TABLE local_list_entries ALTER COLUMN parcel_id DROP NOT NULL;
ALTER TABLE local_list_entries ALTER COLUMN compartment DROP NOT NULL;
ALTER TABLE local_list_entries ADD COLUMN carrier_id TEXT REFERENCES carriers(id);

-- Journaled return collections and deposits have outcomes of their own (§15.4).
ALTER TABLE locker_journal DROP CONSTRAINT locker_journal_outcome_check;
ALTER TABLE locker_journal ADD CONSTRAINT locker_journal_outcome_check
    CHECK (outcome IN ('picked_up', 'already_moved', 'rejected', 'lost', 'counted', 'returned', 'deposited'));
