-- Cancelling a parcel's pending deadlines (every deposit, pickup and cancel does) must not scan
-- every pending deadline: PostgreSQL's planner chose the (fired_at, cancelled_at, due_at) index
-- and filtered by parcel, 8 ms a call at 9,000 pending deadlines and growing with them.
CREATE INDEX deadlines_parcel_pending ON deadlines(parcel_id) WHERE fired_at IS NULL AND cancelled_at IS NULL;
