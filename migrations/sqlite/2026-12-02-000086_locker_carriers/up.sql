-- The carriers allowed at a locker (PUT /api/v1/lockers/{id}/carriers). A locker without rows
-- takes every active carrier; with rows, only those: others are refused `carrier_not_allowed`
-- by pre-checks, pre-advices and kiosk deposits.
CREATE TABLE locker_carriers (
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    carrier_id TEXT NOT NULL REFERENCES carriers(id),
    PRIMARY KEY (locker_id, carrier_id)
);
