-- Every remote open attempt, successful or not: who asked (key and its holder), why, what
-- happened, and who approved or rejected it when it needed a second person. Pending
-- approvals are rows, so they survive a restart; `expires_at` is when one lapses.
CREATE TABLE remote_opens (
    id TEXT PRIMARY KEY NOT NULL,
    admin_key_id TEXT NOT NULL REFERENCES admin_keys(id),
    holder TEXT NOT NULL,
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    compartment INTEGER NOT NULL,
    parcel_id TEXT REFERENCES parcels(id),
    reason TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('opening', 'opened', 'refused', 'failed', 'unknown',
        'pending_approval', 'approved', 'rejected', 'expired')),
    detail TEXT NOT NULL DEFAULT '',
    requested_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP,
    decided_by TEXT REFERENCES admin_keys(id),
    decided_by_holder TEXT,
    decided_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX remote_opens_locker ON remote_opens(locker_id, requested_at);
CREATE INDEX remote_opens_parcel ON remote_opens(parcel_id);
