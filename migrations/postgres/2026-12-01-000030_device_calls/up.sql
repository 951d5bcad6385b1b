-- The answer to every state-changing device call, written in the transaction that made the
-- change: a device that retries a call (same message id) after a server restart gets the
-- answer that matches what was committed, not a fresh run against the new state.
CREATE TABLE device_calls (
    locker_id TEXT NOT NULL REFERENCES lockers(id) ON DELETE CASCADE,
    msg_id TEXT NOT NULL,
    -- SHA-256 (hex) of the action and the payload: tells a retry from a reused id.
    fingerprint TEXT NOT NULL,
    -- The result payload (JSON) sent to the device.
    answer TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (locker_id, msg_id)
);
CREATE INDEX device_calls_age ON device_calls (locker_id, created_at);
