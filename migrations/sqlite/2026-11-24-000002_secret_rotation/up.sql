-- During a webhook secret rotation the previous secret stays valid until this time:
-- inbound signatures may use either, outbound webhooks are signed with both.
ALTER TABLE carriers ADD COLUMN previous_webhook_secret_enc TEXT;
ALTER TABLE carriers ADD COLUMN previous_secret_expires_at TIMESTAMP;
