-- Per-carrier quotas in a locker's shared pool (PUT /api/v1/lockers/{id}/quotas/{carrier_id}):
-- at most `max_in_use` shared compartments of `size` held by the carrier's parcels (reserved,
-- deposited or expired) at once. No row: no limit. A carrier's own section is not counted.
CREATE TABLE carrier_quotas (
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    carrier_id TEXT NOT NULL REFERENCES carriers(id),
    size TEXT NOT NULL CHECK (size IN ('S', 'M', 'L', 'XL')),
    max_in_use INTEGER NOT NULL CHECK (max_in_use BETWEEN 0 AND 10000),
    PRIMARY KEY (locker_id, carrier_id, size)
);
