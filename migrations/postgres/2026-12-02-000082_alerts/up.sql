-- Operator alerts (docs/protocol.md §15.9): what needs a person, raised in the transaction that
-- finds it (a forced or blocked door, an offline conflict, a journal event rejected or lost),
-- listed by the admin API until acknowledged. Each row is also its own outbox entry for the
-- signed webhook to the operator endpoint (`operator_webhook_url`): `delivery` is `pending`
-- until it is delivered, or `dead` after `webhook_max_attempts`.
CREATE TABLE alerts (
    id TEXT PRIMARY KEY NOT NULL,
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    compartment INTEGER,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    acknowledged_at TIMESTAMP,
    acknowledged_by TEXT,
    delivery TEXT NOT NULL DEFAULT 'pending' CHECK (delivery IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    last_error TEXT,
    delivered_at TIMESTAMP
);
CREATE INDEX alerts_open ON alerts(acknowledged_at, id);
CREATE INDEX alerts_due ON alerts(delivery, next_attempt_at);
