-- The local code list carries four kinds of entry (docs/protocol.md §15.8): pickup codes,
-- return-collection codes and pre-advised deposits (each of one parcel and compartment), and
-- courier codes (one per carrier, no parcel, no compartment). `carrier_id` names a courier
-- entry's carrier. SQLite cannot relax NOT NULL in place: the table is rebuilt.
CREATE TABLE local_list_entries_new (
    id TEXT PRIMARY KEY NOT NULL,
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    parcel_id TEXT REFERENCES parcels(id),
    carrier_id TEXT REFERENCES carriers(id),
    kind TEXT NOT NULL,
    compartment INTEGER,
    code_hash TEXT NOT NULL,
    sealed TEXT,
    tag INTEGER,
    verifier TEXT,
    expires_at TIMESTAMP NOT NULL,
    added_version BIGINT,
    removed_version BIGINT,
    created_at TIMESTAMP NOT NULL
);
INSERT INTO local_list_entries_new (id, locker_id, parcel_id, carrier_id, kind, compartment, code_hash, sealed,
                                    tag, verifier, expires_at, added_version, removed_version, created_at)
    SELECT id, locker_id, parcel_id, NULL, kind, compartment, code_hash, sealed,
           tag, verifier, expires_at, added_version, removed_version, created_at
    FROM local_list_entries;
DROP TABLE local_list_entries;
ALTER TABLE local_list_entries_new RENAME TO local_list_entries;
CREATE INDEX local_list_entries_locker ON local_list_entries(locker_id, removed_version);
CREATE INDEX local_list_entries_parcel ON local_list_entries(parcel_id);

-- Journaled return collections and deposits have outcomes of their own (§15.4).
CREATE TABLE locker_journal_new (
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    compartment INTEGER,
    parcel_id TEXT REFERENCES parcels(id),
    -- The event's time as the device's clock gave it, and corrected to the server's.
    device_at TEXT NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('picked_up', 'already_moved', 'rejected', 'lost', 'counted',
                                             'returned', 'deposited')),
    -- JSON: conflicts decided by rule, or why the event was rejected.
    detail TEXT NOT NULL DEFAULT '{}',
    received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (locker_id, seq)
);
INSERT INTO locker_journal_new SELECT * FROM locker_journal;
DROP TABLE locker_journal;
ALTER TABLE locker_journal_new RENAME TO locker_journal;
CREATE INDEX locker_journal_parcel ON locker_journal(parcel_id);
