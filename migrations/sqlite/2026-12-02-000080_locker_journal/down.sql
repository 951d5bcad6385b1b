DROP TABLE locker_journal;
