DROP INDEX parcels_carrier_tracking;
