-- Operator alerts (docs/protocol.md §15.9): what needs a person, raised in the transaction that
-- finds it (a forced or blocked door, an offline conflict, a journal event rejected or lost),
-- listed by the admin API until acknowledged.
CREATE TABLE alerts (
    id TEXT PRIMARY KEY NOT NULL,
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    compartment INTEGER,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    acknowledged_at TIMESTAMP,
    acknowledged_by TEXT
);
CREATE INDEX alerts_open ON alerts(acknowledged_at, id);
