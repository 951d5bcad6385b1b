DROP TABLE carrier_quotas;
