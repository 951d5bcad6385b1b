DROP INDEX deadlines_parcel_pending;
