CREATE INDEX parcels_locker ON parcels(locker_id);
DROP INDEX parcels_locker_state;
