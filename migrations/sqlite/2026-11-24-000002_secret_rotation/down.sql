ALTER TABLE carriers DROP COLUMN previous_secret_expires_at;
ALTER TABLE carriers DROP COLUMN previous_webhook_secret_enc;
