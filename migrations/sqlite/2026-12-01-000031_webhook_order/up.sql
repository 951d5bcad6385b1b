-- A parcel's webhooks go out in event order: the outbox asks, for each due delivery, whether
-- an earlier delivery of the same parcel is still pending. This keeps that question cheap.
CREATE INDEX webhook_outbox_parcel_pending ON webhook_outbox (parcel_id, id) WHERE status = 'pending';
