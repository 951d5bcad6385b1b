-- Wrong-code accounting per locker and kind of code (pickup, collect, courier), persisted so a
-- server restart does not hand an attacker a fresh allowance or end a lockout early.
-- One row per (locker, kind); written only by that locker's actor.
CREATE TABLE code_guesses (
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    kind TEXT NOT NULL,
    -- GCRA theoretical arrival time: the allowance is full when this is not after now.
    allowance_at TIMESTAMP NOT NULL,
    -- Lockouts in a row; each one lasts twice the previous, up to the cap.
    level INTEGER NOT NULL DEFAULT 0,
    locked_until TIMESTAMP,
    last_failure_at TIMESTAMP NOT NULL,
    PRIMARY KEY (locker_id, kind)
);

-- Every lockout that started, for the operator (GET /api/v1/lockers/{id}/lockouts). Never the code.
CREATE TABLE lockouts (
    id TEXT PRIMARY KEY NOT NULL,
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    kind TEXT NOT NULL,
    level INTEGER NOT NULL,
    started_at TIMESTAMP NOT NULL,
    locked_until TIMESTAMP NOT NULL
);
CREATE INDEX lockouts_locker ON lockouts(locker_id, id);
