-- Parcels in the removed state must be gone (or changed) before this runs.
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt (the documented
-- twelve-step procedure), with foreign keys off so the tables that reference parcels keep
-- their rows. Every column is copied by name. The rebuild runs in its own transaction.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE parcels_new (
    id TEXT PRIMARY KEY NOT NULL,
    carrier_id TEXT NOT NULL REFERENCES carriers(id),
    tracking_number TEXT NOT NULL,
    site_id TEXT NOT NULL REFERENCES sites(id),
    recipient_id TEXT REFERENCES recipients(id),
    locker_id TEXT REFERENCES lockers(id),
    compartment_id TEXT REFERENCES compartments(id),
    size TEXT NOT NULL CHECK (size IN ('S', 'M', 'L', 'XL')),
    state TEXT NOT NULL CHECK (state IN ('expected', 'reserved', 'deposited', 'picked_up', 'expired', 'returned', 'cancelled')),
    -- Keyed hashes only. Cleared when the parcel leaves the locker, so uniqueness holds among live parcels.
    pickup_code_hash TEXT,
    qr_token_hash TEXT,
    collection_code_hash TEXT,
    reserved_until TIMESTAMP,
    deposited_at TIMESTAMP,
    pickup_deadline TIMESTAMP,
    picked_up_at TIMESTAMP,
    expired_at TIMESTAMP,
    returned_at TIMESTAMP,
    cancelled_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

INSERT INTO parcels_new (id, carrier_id, tracking_number, site_id, recipient_id, locker_id, compartment_id, size, state, pickup_code_hash, qr_token_hash, collection_code_hash, reserved_until, deposited_at, pickup_deadline, picked_up_at, expired_at, returned_at, cancelled_at, created_at, updated_at)
SELECT id, carrier_id, tracking_number, site_id, recipient_id, locker_id, compartment_id, size, state, pickup_code_hash, qr_token_hash, collection_code_hash, reserved_until, deposited_at, pickup_deadline, picked_up_at, expired_at, returned_at, cancelled_at, created_at, updated_at FROM parcels;

DROP TABLE parcels;
ALTER TABLE parcels_new RENAME TO parcels;
CREATE UNIQUE INDEX parcels_live_tracking ON parcels(carrier_id, tracking_number)
    WHERE state IN ('expected', 'reserved', 'deposited', 'expired');
CREATE UNIQUE INDEX parcels_pickup_code ON parcels(locker_id, pickup_code_hash) WHERE pickup_code_hash IS NOT NULL;
CREATE UNIQUE INDEX parcels_qr_token ON parcels(qr_token_hash) WHERE qr_token_hash IS NOT NULL;
CREATE UNIQUE INDEX parcels_collection_code ON parcels(locker_id, collection_code_hash) WHERE collection_code_hash IS NOT NULL;
CREATE INDEX parcels_state ON parcels(state);
CREATE INDEX parcels_locker ON parcels(locker_id);
CREATE INDEX parcels_recipient ON parcels(recipient_id);
COMMIT;
PRAGMA foreign_keys = ON;
