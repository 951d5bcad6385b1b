DROP TABLE locker_carriers;
