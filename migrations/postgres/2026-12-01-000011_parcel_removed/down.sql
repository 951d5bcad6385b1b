ALTER TABLE parcels DROP CONSTRAINT parcels_state_check;
ALTER TABLE parcels ADD CONSTRAINT parcels_state_check
    CHECK (state IN ('expected', 'reserved', 'deposited', 'picked_up', 'expired', 'returned', 'cancelled'));
