-- A locker's size classes as an administrator sets them (PUT /api/v1/lockers/{id}/size-classes):
-- the inside dimensions (mm) and the heaviest parcel (g) of each size, which map a carrier's
-- parcel dimensions to a size. A locker without rows uses the defaults (domain::booking).
CREATE TABLE locker_size_classes (
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    size TEXT NOT NULL CHECK (size IN ('S', 'M', 'L', 'XL')),
    length_mm INTEGER NOT NULL CHECK (length_mm BETWEEN 1 AND 5000),
    width_mm INTEGER NOT NULL CHECK (width_mm BETWEEN 1 AND 5000),
    height_mm INTEGER NOT NULL CHECK (height_mm BETWEEN 1 AND 5000),
    max_weight_g INTEGER NOT NULL CHECK (max_weight_g BETWEEN 1 AND 1000000),
    PRIMARY KEY (locker_id, size)
);
