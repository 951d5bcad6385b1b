-- The whole lockerhub data model. Ids are application-generated UUIDv7 text, so rows are
-- created without RETURNING (MultiConnection lacks it) and ids sort by creation time.

CREATE TABLE admin_keys (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);

CREATE TABLE sites (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    dwell_hours INTEGER,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE carriers (
    id TEXT PRIMARY KEY NOT NULL,
    code TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    api_key_hash TEXT NOT NULL UNIQUE,
    courier_code_hash TEXT UNIQUE,
    webhook_url TEXT,
    webhook_secret_enc TEXT NOT NULL,
    dwell_hours INTEGER,
    webhook_rate_per_sec INTEGER NOT NULL DEFAULT 10,
    webhook_concurrency INTEGER NOT NULL DEFAULT 4,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE lockers (
    id TEXT PRIMARY KEY NOT NULL,
    site_id TEXT NOT NULL REFERENCES sites(id),
    name TEXT NOT NULL,
    location TEXT NOT NULL DEFAULT '',
    credential_hash TEXT NOT NULL,
    code_salt TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    firmware_version TEXT,
    protocol_version TEXT,
    connected BOOLEAN NOT NULL DEFAULT FALSE,
    last_seen_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX lockers_site ON lockers(site_id);

-- A carrier's dedicated section of one locker; compartments point at it.
CREATE TABLE sections (
    id TEXT PRIMARY KEY NOT NULL,
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    carrier_id TEXT NOT NULL REFERENCES carriers(id),
    exclusive BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (locker_id, carrier_id)
);

CREATE TABLE compartments (
    id TEXT PRIMARY KEY NOT NULL,
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    number INTEGER NOT NULL,
    size TEXT NOT NULL CHECK (size IN ('S', 'M', 'L', 'XL')),
    accessible BOOLEAN NOT NULL DEFAULT FALSE,
    status TEXT NOT NULL DEFAULT 'free' CHECK (status IN ('free', 'reserved', 'occupied', 'out_of_service')),
    section_id TEXT REFERENCES sections(id),
    fault TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (locker_id, number)
);

CREATE TABLE recipients (
    id TEXT PRIMARY KEY NOT NULL,
    site_id TEXT NOT NULL REFERENCES sites(id),
    name TEXT NOT NULL,
    unit TEXT NOT NULL DEFAULT '',
    phone TEXT,
    email TEXT,
    push_target TEXT,
    channels TEXT NOT NULL DEFAULT 'email,sms',
    vacation_until TIMESTAMP,
    needs_accessible BOOLEAN NOT NULL DEFAULT FALSE,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX recipients_site_phone ON recipients(site_id, phone);
CREATE INDEX recipients_site_name ON recipients(site_id, name);

CREATE TABLE parcels (
    id TEXT PRIMARY KEY NOT NULL,
    carrier_id TEXT NOT NULL REFERENCES carriers(id),
    tracking_number TEXT NOT NULL,
    site_id TEXT NOT NULL REFERENCES sites(id),
    recipient_id TEXT REFERENCES recipients(id),
    locker_id TEXT REFERENCES lockers(id),
    compartment_id TEXT REFERENCES compartments(id),
    size TEXT NOT NULL CHECK (size IN ('S', 'M', 'L', 'XL')),
    state TEXT NOT NULL CHECK (state IN ('expected', 'reserved', 'deposited', 'picked_up', 'expired', 'returned', 'cancelled')),
    -- Keyed hashes only. Cleared when the parcel leaves the locker, so uniqueness holds among live parcels.
    pickup_code_hash TEXT,
    qr_token_hash TEXT,
    collection_code_hash TEXT,
    reserved_until TIMESTAMP,
    deposited_at TIMESTAMP,
    pickup_deadline TIMESTAMP,
    picked_up_at TIMESTAMP,
    expired_at TIMESTAMP,
    returned_at TIMESTAMP,
    cancelled_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX parcels_live_tracking ON parcels(carrier_id, tracking_number)
    WHERE state IN ('expected', 'reserved', 'deposited', 'expired');
CREATE UNIQUE INDEX parcels_pickup_code ON parcels(locker_id, pickup_code_hash) WHERE pickup_code_hash IS NOT NULL;
CREATE UNIQUE INDEX parcels_qr_token ON parcels(qr_token_hash) WHERE qr_token_hash IS NOT NULL;
CREATE UNIQUE INDEX parcels_collection_code ON parcels(locker_id, collection_code_hash) WHERE collection_code_hash IS NOT NULL;
CREATE INDEX parcels_state ON parcels(state);
CREATE INDEX parcels_locker ON parcels(locker_id);
CREATE INDEX parcels_recipient ON parcels(recipient_id);

-- Append-only audit log: triggers below refuse UPDATE and DELETE.
CREATE TABLE parcel_events (
    id TEXT PRIMARY KEY NOT NULL,
    parcel_id TEXT NOT NULL REFERENCES parcels(id),
    kind TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}',
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX parcel_events_parcel ON parcel_events(parcel_id, created_at);

-- Transactional outbox for carrier webhooks, written in the same transaction as the state change.
CREATE TABLE webhook_outbox (
    id TEXT PRIMARY KEY NOT NULL,
    carrier_id TEXT NOT NULL REFERENCES carriers(id),
    parcel_id TEXT REFERENCES parcels(id),
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    last_status_code INTEGER,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP
);
CREATE INDEX webhook_outbox_due ON webhook_outbox(status, next_attempt_at);
CREATE INDEX webhook_outbox_carrier ON webhook_outbox(carrier_id, created_at);

CREATE TABLE webhook_attempts (
    id TEXT PRIMARY KEY NOT NULL,
    outbox_id TEXT NOT NULL REFERENCES webhook_outbox(id),
    attempted_at TIMESTAMP NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX webhook_attempts_outbox ON webhook_attempts(outbox_id);

-- Transactional outbox for recipient notifications. The body holds the pickup code until it is
-- sent, then is replaced by a redacted copy.
CREATE TABLE notification_outbox (
    id TEXT PRIMARY KEY NOT NULL,
    parcel_id TEXT NOT NULL REFERENCES parcels(id),
    recipient_id TEXT REFERENCES recipients(id),
    kind TEXT NOT NULL,
    channel TEXT,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    sent_at TIMESTAMP
);
CREATE INDEX notification_outbox_due ON notification_outbox(status, next_attempt_at);
CREATE INDEX notification_outbox_parcel ON notification_outbox(parcel_id);

-- Every scheduled deadline (reservation expiry, reminders, dwell expiry), rebuilt into actor timers at start.
CREATE TABLE deadlines (
    id TEXT PRIMARY KEY NOT NULL,
    parcel_id TEXT NOT NULL REFERENCES parcels(id),
    kind TEXT NOT NULL,
    due_at TIMESTAMP NOT NULL,
    fired_at TIMESTAMP,
    cancelled_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX deadlines_due ON deadlines(fired_at, cancelled_at, due_at);
CREATE INDEX deadlines_parcel ON deadlines(parcel_id);

-- Inbound carrier callbacks by event id: a replay gets the stored answer and changes nothing.
CREATE TABLE inbound_events (
    carrier_id TEXT NOT NULL REFERENCES carriers(id),
    event_id TEXT NOT NULL,
    response_status INTEGER NOT NULL,
    response_body TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (carrier_id, event_id)
);

-- Hardware faults reported by lockers or found by reconciliation, for the property manager.
CREATE TABLE faults (
    id TEXT PRIMARY KEY NOT NULL,
    locker_id TEXT NOT NULL REFERENCES lockers(id),
    compartment_number INTEGER,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL,
    resolved_at TIMESTAMP
);
CREATE INDEX faults_locker ON faults(locker_id, created_at);

CREATE TRIGGER parcel_events_no_update BEFORE UPDATE ON parcel_events
BEGIN SELECT RAISE(ABORT, 'parcel_events is append-only'); END;
CREATE TRIGGER parcel_events_no_delete BEFORE DELETE ON parcel_events
BEGIN SELECT RAISE(ABORT, 'parcel_events is append-only'); END;
