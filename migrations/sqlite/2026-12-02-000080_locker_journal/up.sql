-- A 1.1 locker's offline journal, as the server applied it (docs/protocol.md §15.4): one row
-- per sequence number, written in the transaction that applies the event, so an event is
-- applied at most once and a replay of it is answered with the outcome stored here. The
-- highest `seq` of a locker is how far its journal is applied.
CREATE TABLE locker_journal (
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    compartment INTEGER,
    parcel_id TEXT REFERENCES parcels(id),
    -- The event's time as the device's clock gave it, and corrected to the server's.
    device_at TEXT NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('picked_up', 'already_moved', 'rejected', 'lost', 'counted')),
    -- JSON: conflicts decided by rule, or why the event was rejected.
    detail TEXT NOT NULL DEFAULT '{}',
    received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (locker_id, seq)
);
CREATE INDEX locker_journal_parcel ON locker_journal(parcel_id);
