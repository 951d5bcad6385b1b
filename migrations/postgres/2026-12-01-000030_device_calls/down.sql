DROP TABLE device_calls;
