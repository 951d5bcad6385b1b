-- A carrier's parcel by tracking number, in any state (the carrier API's lookups: cancel,
-- redirect, return, status). The only index on these columns was the partial unique one for
-- live parcels, which a lookup by a bound state or by no state cannot use: SQLite scanned the
-- whole parcels table, or every parcel in the states asked for, on each such request.
CREATE INDEX parcels_carrier_tracking ON parcels(carrier_id, tracking_number);
