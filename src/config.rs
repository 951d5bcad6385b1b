//! Settings, layered: built-in defaults, then an optional TOML file, then `DATABASE_URL`,
//! then `LOCKERHUB_*` environment variables. Secrets are wrapped so they never print.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::credentials::ServerKey;
use crate::db::DatabaseUrl;

/// A string that must not appear in logs or `Debug` output.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub data_dir: PathBuf,
    pub database_url: Option<Secret>,
    pub db_pool_size: u32,
    pub db_connect_timeout_secs: u64,
    pub log_format: LogFormat,
    pub log_level: String,
    pub max_body_bytes: usize,
    pub max_csv_bytes: usize,
    pub auth_failures_per_minute: u32,
    /// A request body must have arrived this long after the request head, on every route.
    pub request_body_timeout_ms: u64,
    /// Connections one client address may hold open before they carry an authenticated request.
    pub max_unauthenticated_connections_per_ip: usize,
    pub secret_key: Option<Secret>,
    pub pickup_code_length: usize,
    pub pickup_attempts: u32,
    pub pickup_attempt_window_secs: u64,
    pub pickup_lockout_secs: u64,
    pub device_heartbeat_secs: u64,
    pub device_timeout_secs: u64,
    pub deposit_timeout_secs: u64,
    pub device_call_timeout_secs: u64,
    pub dwell_hours: u32,
    pub reservation_hours: u32,
    pub webhook_retry_base_ms: u64,
    pub webhook_max_attempts: i32,
    pub webhook_timeout_secs: u64,
    pub outbox_poll_ms: u64,
    pub secret_rotation_overlap_hours: u32,
    /// Base URL recipients reach this server at (QR links in messages).
    pub public_url: String,
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    pub smtp_tls: SmtpTls,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<Secret>,
    pub mail_from: String,
    pub sms_url: Option<String>,
    pub sms_username: Option<String>,
    pub sms_password: Option<Secret>,
    pub sms_from: String,
    pub sms_format: SmsFormat,
    pub push_url: Option<String>,
    pub push_token: Option<Secret>,
    pub templates_dir: Option<PathBuf>,
    pub notification_max_attempts: i32,
    pub notification_retry_base_ms: u64,
    /// Length of one "hour" for dwell windows, reminders and reservations. Real hours in
    /// production; tests shorten it to run deadlines in milliseconds.
    pub hour_ms: u64,
    /// Reminders go out this many hours before the pickup deadline.
    pub reminder_offsets_hours: Vec<u32>,
    pub deadline_scan_ms: u64,
}

/// How to secure the SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain, then upgrade with STARTTLS (required).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host.
    None,
}

/// The request an SMS gateway expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsFormat {
    /// Form post with To, From and Body, and HTTP basic auth (Twilio and compatibles).
    Twilio,
    /// JSON body {"to", "from", "text"} with a bearer token.
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            workers: 0,
            data_dir: PathBuf::from("data"),
            database_url: None,
            db_pool_size: 16,
            db_connect_timeout_secs: 5,
            log_format: LogFormat::Pretty,
            log_level: "info".into(),
            max_body_bytes: 64 * 1024,
            max_csv_bytes: 2 * 1024 * 1024,
            auth_failures_per_minute: 30,
            request_body_timeout_ms: 30_000,
            max_unauthenticated_connections_per_ip: 128,
            secret_key: None,
            pickup_code_length: 8,
            pickup_attempts: 5,
            pickup_attempt_window_secs: 900,
            pickup_lockout_secs: 900,
            device_heartbeat_secs: 20,
            device_timeout_secs: 60,
            deposit_timeout_secs: 300,
            device_call_timeout_secs: 30,
            dwell_hours: 72,
            reservation_hours: 24,
            webhook_retry_base_ms: 5_000,
            webhook_max_attempts: 15,
            webhook_timeout_secs: 10,
            outbox_poll_ms: 1_000,
            secret_rotation_overlap_hours: 24,
            public_url: "http://127.0.0.1:8080".into(),
            smtp_host: None,
            smtp_port: 587,
            smtp_tls: SmtpTls::Starttls,
            smtp_username: None,
            smtp_password: None,
            mail_from: "lockerhub <noreply@localhost>".into(),
            sms_url: None,
            sms_username: None,
            sms_password: None,
            sms_from: "lockerhub".into(),
            sms_format: SmsFormat::Twilio,
            push_url: None,
            push_token: None,
            templates_dir: None,
            notification_max_attempts: 10,
            notification_retry_base_ms: 5_000,
            hour_ms: 3_600_000,
            reminder_offsets_hours: vec![24, 4],
            deadline_scan_ms: 1_000,
        }
    }
}

/// Shown by `--help`: every setting, its environment variable and its default.
pub const SETTINGS_HELP: &str = "\
Settings (defaults < TOML file < DATABASE_URL < LOCKERHUB_* environment):
  host                        LOCKERHUB_HOST                        127.0.0.1
  port                        LOCKERHUB_PORT                        8080
  workers                     LOCKERHUB_WORKERS                     0 (one per core)
  data_dir                    LOCKERHUB_DATA_DIR                    data
  database_url                LOCKERHUB_DATABASE_URL, DATABASE_URL  sqlite://<data_dir>/lockerhub.db
                              (postgres://user:pass@host:port/db selects PostgreSQL)
  db_pool_size                LOCKERHUB_DB_POOL_SIZE                16
  db_connect_timeout_secs     LOCKERHUB_DB_CONNECT_TIMEOUT_SECS     5
  log_format                  LOCKERHUB_LOG_FORMAT                  pretty (or json)
  log_level                   LOCKERHUB_LOG_LEVEL                   info (or an EnvFilter directive)
  max_body_bytes              LOCKERHUB_MAX_BODY_BYTES              65536
  max_csv_bytes               LOCKERHUB_MAX_CSV_BYTES               2097152
  auth_failures_per_minute    LOCKERHUB_AUTH_FAILURES_PER_MINUTE    30 per client IP, then 429
  request_body_timeout_ms     LOCKERHUB_REQUEST_BODY_TIMEOUT_MS     30000 (then 408 and the connection closes)
  max_unauthenticated_connections_per_ip
                              LOCKERHUB_MAX_UNAUTHENTICATED_CONNECTIONS_PER_IP
                                                                    128 (more are answered 429 and closed)
  secret_key                  LOCKERHUB_SECRET_KEY                  64 hex chars; generated into
                                                                    <data_dir>/secret.key if unset
  pickup_code_length          LOCKERHUB_PICKUP_CODE_LENGTH          8
  pickup_attempts             LOCKERHUB_PICKUP_ATTEMPTS             5 wrong codes per window per locker
  pickup_attempt_window_secs  LOCKERHUB_PICKUP_ATTEMPT_WINDOW_SECS  900 (wrong codes refill one per window/attempts)
  pickup_lockout_secs         LOCKERHUB_PICKUP_LOCKOUT_SECS         900
  device_heartbeat_secs       LOCKERHUB_DEVICE_HEARTBEAT_SECS       20 (WebSocket ping interval)
  device_timeout_secs         LOCKERHUB_DEVICE_TIMEOUT_SECS         60 (silent devices are dropped)
  deposit_timeout_secs        LOCKERHUB_DEPOSIT_TIMEOUT_SECS        300 (an unfinished deposit is cancelled)
  device_call_timeout_secs    LOCKERHUB_DEVICE_CALL_TIMEOUT_SECS    30 (a remote open unanswered by then is
                                                                    reported as outcome unknown, never replayed)
  dwell_hours                 LOCKERHUB_DWELL_HOURS                 72
  reservation_hours           LOCKERHUB_RESERVATION_HOURS           24
  webhook_retry_base_ms       LOCKERHUB_WEBHOOK_RETRY_BASE_MS       5000 (doubles per attempt, capped at 8 h, with jitter)
  webhook_max_attempts        LOCKERHUB_WEBHOOK_MAX_ATTEMPTS        15 (about a day), then dead-lettered
  webhook_timeout_secs        LOCKERHUB_WEBHOOK_TIMEOUT_SECS        10
  outbox_poll_ms              LOCKERHUB_OUTBOX_POLL_MS              1000
  secret_rotation_overlap_hours LOCKERHUB_SECRET_ROTATION_OVERLAP_HOURS 24
Notifications (a channel with nothing configured goes to the log transport: log + database):
  public_url                  LOCKERHUB_PUBLIC_URL                  http://127.0.0.1:8080 (QR links)
  smtp_host, smtp_port        LOCKERHUB_SMTP_HOST, _SMTP_PORT       unset, 587
  smtp_tls                    LOCKERHUB_SMTP_TLS                    starttls (or tls, none)
  smtp_username, smtp_password LOCKERHUB_SMTP_USERNAME, _PASSWORD   unset
  mail_from                   LOCKERHUB_MAIL_FROM                   lockerhub <noreply@localhost>
  sms_url                     LOCKERHUB_SMS_URL                     unset (e.g. Twilio's Messages.json URL)
  sms_username, sms_password  LOCKERHUB_SMS_USERNAME, _PASSWORD     unset (basic auth, or bearer for json)
  sms_from, sms_format        LOCKERHUB_SMS_FROM, _SMS_FORMAT       lockerhub, twilio (or json)
  push_url, push_token        LOCKERHUB_PUSH_URL, _PUSH_TOKEN       unset
  templates_dir               LOCKERHUB_TEMPLATES_DIR               unset: built-in templates
  notification_max_attempts   LOCKERHUB_NOTIFICATION_MAX_ATTEMPTS   10 per channel, then the next channel
  notification_retry_base_ms  LOCKERHUB_NOTIFICATION_RETRY_BASE_MS  5000
Deadlines:
  reminder_offsets_hours      LOCKERHUB_REMINDER_OFFSETS_HOURS      [24, 4] (hours before the deadline)
  deadline_scan_ms            LOCKERHUB_DEADLINE_SCAN_MS            1000
  hour_ms                     LOCKERHUB_HOUR_MS                     3600000 (the clock's hour; for tests)
The config file is --config PATH, or LOCKERHUB_CONFIG, or ./lockerhub.toml if present.";

impl Settings {
    /// Loads the layered settings; `file` overrides the default file location.
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("LOCKERHUB_CONFIG").map(PathBuf::from));
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        match &file {
            Some(path) if !path.exists() => return Err(format!("config file {} does not exist", path.display())),
            Some(path) => fig = fig.merge(Toml::file(path)),
            None => fig = fig.merge(Toml::file("lockerhub.toml")),
        }
        fig = fig
            .merge(Env::raw().only(&["DATABASE_URL"]))
            .merge(Env::prefixed("LOCKERHUB_").ignore(&["CONFIG"]));
        let settings: Settings = fig.extract().map_err(|e| format!("invalid configuration: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), String> {
        if !(6..=12).contains(&self.pickup_code_length) {
            return Err("pickup_code_length must be between 6 and 12".into());
        }
        if self.pickup_attempts == 0 || self.pickup_attempt_window_secs == 0 {
            return Err("pickup_attempts and pickup_attempt_window_secs must be positive".into());
        }
        if self.auth_failures_per_minute == 0 {
            return Err("auth_failures_per_minute must be positive".into());
        }
        if self.webhook_max_attempts < 1 || self.outbox_poll_ms == 0 || self.webhook_retry_base_ms == 0 {
            return Err("webhook_max_attempts, outbox_poll_ms and webhook_retry_base_ms must be positive".into());
        }
        if self.notification_max_attempts < 1 || self.notification_retry_base_ms == 0 {
            return Err("notification_max_attempts and notification_retry_base_ms must be positive".into());
        }
        if self.hour_ms == 0 || self.deadline_scan_ms == 0 {
            return Err("hour_ms and deadline_scan_ms must be positive".into());
        }
        if self.request_body_timeout_ms == 0 || self.max_unauthenticated_connections_per_ip == 0 {
            return Err("request_body_timeout_ms and max_unauthenticated_connections_per_ip must be positive".into());
        }
        if self.db_pool_size == 0 {
            return Err("db_pool_size must be positive".into());
        }
        if self.device_heartbeat_secs == 0 || self.device_timeout_secs <= self.device_heartbeat_secs {
            return Err("device_timeout_secs must be greater than device_heartbeat_secs > 0".into());
        }
        Ok(())
    }

    pub fn database_url(&self) -> Result<DatabaseUrl, String> {
        let raw = match &self.database_url {
            Some(url) => url.expose().to_string(),
            None => format!("sqlite://{}", self.data_dir.join("lockerhub.db").display()),
        };
        DatabaseUrl::parse(&raw, self.db_connect_timeout())
    }

    /// A new clock with this configuration's hour. A running application has one, shared by
    /// everything in it (`AppState::clock`); use that one to read the time.
    pub fn clock(&self) -> crate::clock::Clock {
        crate::clock::Clock::new(Duration::from_millis(self.hour_ms))
    }

    pub fn db_connect_timeout(&self) -> Duration {
        Duration::from_secs(self.db_connect_timeout_secs)
    }

    /// The configured server key, or the one kept in `<data_dir>/secret.key` (created on first start).
    pub fn server_key(&self) -> Result<ServerKey, String> {
        if let Some(k) = &self.secret_key {
            return ServerKey::from_hex(k.expose());
        }
        let path = self.data_dir.join("secret.key");
        match std::fs::read_to_string(&path) {
            Ok(s) => ServerKey::from_hex(&s).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.data_dir)
                    .map_err(|e| format!("cannot create {}: {e}", self.data_dir.display()))?;
                let key = ServerKey::generate();
                write_private(&path, &key.to_hex())?;
                Ok(key)
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Settings {
            secret_key: Some(Secret::new("deadbeef")),
            ..Settings::default()
        };
        assert!(!format!("{s:?}").contains("deadbeef"));
    }

    #[test]
    fn default_database_is_sqlite_in_data_dir() {
        let url = Settings::default().database_url().unwrap();
        assert_eq!(url.backend(), crate::db::Backend::Sqlite);
        assert_eq!(url.display(), "data/lockerhub.db");
    }

    #[test]
    fn postgres_url_hides_password_and_gets_timeout() {
        let url = DatabaseUrl::parse("postgres://u:hunter2@db.example:6432/lh", Duration::from_secs(3)).unwrap();
        assert_eq!(url.display(), "postgres://db.example:6432/lh");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(url.target().contains("connect_timeout=3"));
        assert!(DatabaseUrl::parse("mysql://x", Duration::from_secs(1)).is_err());
    }
}
