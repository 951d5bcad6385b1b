-- Every delivery attempt of a notification, on every channel, with its error: the outbox row
-- keeps only the current channel and the last error, so an email that bounced before the SMS
-- fallback succeeded would otherwise leave no trace in the notification log.
CREATE TABLE notification_attempts (
    id TEXT PRIMARY KEY NOT NULL,
    notification_id TEXT NOT NULL REFERENCES notification_outbox(id),
    channel TEXT,
    outcome TEXT NOT NULL CHECK (outcome IN ('sent', 'transient_failure', 'permanent_failure')),
    error TEXT,
    attempted_at TIMESTAMP NOT NULL
);
CREATE INDEX notification_attempts_notification ON notification_attempts(notification_id);
