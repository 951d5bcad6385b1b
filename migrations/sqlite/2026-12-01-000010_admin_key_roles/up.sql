-- Admin keys name the person who holds them and carry a role, so a second approval can be
-- required from a different person and read-only keys can exist. Existing keys keep full
-- rights (role admin) and their label as holder.
ALTER TABLE admin_keys ADD COLUMN holder TEXT NOT NULL DEFAULT '';
ALTER TABLE admin_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'admin' CHECK (role IN ('admin', 'operator', 'viewer'));
ALTER TABLE admin_keys ADD COLUMN created_by TEXT;
ALTER TABLE admin_keys ADD COLUMN revoked_by TEXT;
UPDATE admin_keys SET holder = name;
