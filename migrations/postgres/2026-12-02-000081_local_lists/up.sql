-- A 1.1 locker's local code list (docs/protocol.md §15.8): its version (one per change the
-- device is sent), the epoch of its key, and the salt of its verifiers.
CREATE TABLE local_lists (
    locker_id TEXT PRIMARY KEY NOT NULL REFERENCES lockers(id),
    version BIGINT NOT NULL,
    epoch INTEGER NOT NULL,
    salt TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
-- One entry per issued pickup code at such a locker. `sealed` holds the code and factor
-- encrypted under the server key until the verifier (a slow hash) is made, off the write
-- path; then it is erased. `added_version` is the list version that first carries the
-- verifier, `removed_version` the one that drops it; retired rows are kept for differential
-- updates and then deleted.
CREATE TABLE local_list_entries (
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
CREATE INDEX local_list_entries_locker ON local_list_entries(locker_id, removed_version);
CREATE INDEX local_list_entries_parcel ON local_list_entries(parcel_id);
