DELETE FROM local_list_entries WHERE parcel_id IS NULL OR compartment IS NULL;
CREATE TABLE local_list_entries_old (
    id TEXT PRIMARY KEY NOT NULL,
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    parcel_id TEXT NOT NULL REFERENCES parcels(id),
    kind TEXT NOT NULL,
    compartment INTEGER NOT NULL,
    code_hash TEXT NOT NULL,
    sealed TEXT,
    tag INTEGER,
    verifier TEXT,
    expires_at TIMESTAMP NOT NULL,
    added_version BIGINT,
    removed_version BIGINT,
    created_at TIMESTAMP NOT NULL
);
INSERT INTO local_list_entries_old SELECT id, locker_id, parcel_id, kind, compartment, code_hash, sealed,
    tag, verifier, expires_at, added_version, removed_version, created_at FROM local_list_entries;
DROP TABLE local_list_entries;
ALTER TABLE local_list_entries_old RENAME TO local_list_entries;
CREATE INDEX local_list_entries_locker ON local_list_entries(locker_id, removed_version);
CREATE INDEX local_list_entries_parcel ON local_list_entries(parcel_id);

DELETE FROM locker_journal WHERE outcome IN ('returned', 'deposited');
CREATE TABLE locker_journal_old (
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    compartment INTEGER,
    parcel_id TEXT REFERENCES parcels(id),
    device_at TEXT NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('picked_up', 'already_moved', 'rejected', 'lost', 'counted')),
    detail TEXT NOT NULL DEFAULT '{}',
    received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (locker_id, seq)
);
INSERT INTO locker_journal_old SELECT * FROM locker_journal;
DROP TABLE locker_journal;
ALTER TABLE locker_journal_old RENAME TO locker_journal;
CREATE INDEX locker_journal_parcel ON locker_journal(parcel_id);
