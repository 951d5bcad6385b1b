DROP TABLE locker_size_classes;
