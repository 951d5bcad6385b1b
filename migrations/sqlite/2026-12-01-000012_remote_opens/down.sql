DROP TABLE remote_opens;
