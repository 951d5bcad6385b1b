ALTER TABLE admin_keys DROP COLUMN revoked_by;
ALTER TABLE admin_keys DROP COLUMN created_by;
ALTER TABLE admin_keys DROP COLUMN role;
ALTER TABLE admin_keys DROP COLUMN holder;
