//! Settings, layered: built-in defaults, then an optional TOML file, then `DATABASE_URL`,
//! then `LOCKERHUB_*` environment variables. Secrets are wrapped so they never print.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

use crate::credentials::ServerKey;

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

/// How durable a SQLite commit is before anyone is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// Every batch is on disk (fsync) before it is acknowledged, across a power cut too.
    Full,
    /// Survives a process crash, but a power cut may lose the last commits.
    Normal,
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
    /// SQLite: how durable a commit is before it is acknowledged.
    pub sqlite_synchronous: SqliteSync,
    /// SQLite: at most this many operations share one commit.
    pub write_batch_max: usize,
    /// SQLite: operations waiting for the writer beyond this are refused with 503 `unavailable`.
    pub write_queue: usize,
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
    /// Cap of the escalating lockout; also the quiet time that forgives the escalation.
    pub pickup_lockout_max_secs: u64,
    /// Whether a keypad pickup code needs the recipient's second factor (docs/security.md §3).
    pub pickup_second_factor: SecondFactor,
    /// `SearchDirectory` calls and phone lookups allowed per locker per hour.
    pub directory_lookups_per_hour: u32,
    pub device_heartbeat_secs: u64,
    pub device_timeout_secs: u64,
    pub deposit_timeout_secs: u64,
    pub device_call_timeout_secs: u64,
    /// A kiosk interaction bound by a courier code ends after this much silence (10–3600).
    pub kiosk_interaction_timeout_secs: u64,
    /// How far a 1.1 locker's clock may be off, in the recipient's favour, when it checks a QR
    /// token's expiry offline (0-3600; docs/protocol.md §15.2).
    pub offline_clock_skew_secs: u64,
    /// Argon2id memory (KiB) and passes of a 1.1 locker's local code list verifiers
    /// (docs/protocol.md §15.8; default the OWASP minimum, 19 MiB and 2 passes).
    pub offline_list_kdf_m_kib: u32,
    pub offline_list_kdf_t: u32,
    /// How long the answer to a state-changing device call is kept in the database for a retry
    /// after a server restart (at most `DEVICE_CALLS_PER_LOCKER` per locker).
    pub device_call_retention_secs: u64,
    pub dwell_hours: u32,
    pub reservation_hours: u32,
    /// A locker offline for longer than this is `locker_unavailable` to bookings.
    pub booking_offline_grace_secs: u64,
    pub webhook_retry_base_ms: u64,
    pub webhook_max_attempts: i32,
    pub webhook_timeout_secs: u64,
    /// Where operator alerts are sent as signed webhooks (docs/protocol.md §15.9), with the
    /// `whsec_` secret they are signed with; no URL, no webhook (alerts stay in the admin API).
    pub operator_webhook_url: Option<String>,
    pub operator_webhook_secret: Option<Secret>,
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
    /// Queue notifications without sending them (maintenance, load tests that read the codes
    /// from the queue); they go out once the server runs without it.
    pub notifications_paused: bool,
    /// Length of one "hour" for dwell windows, reminders and reservations. Real hours in
    /// production; tests shorten it to run deadlines in milliseconds.
    pub hour_ms: u64,
    /// Reminders go out this many hours before the pickup deadline.
    pub reminder_offsets_hours: Vec<u32>,
    pub deadline_scan_ms: u64,
    /// Remote opens one admin key may make at once, then one more per period.
    pub remote_open_per_key_burst: u32,
    pub remote_open_per_key_period_secs: u64,
    /// Remote opens one locker may get at once, then one more per period.
    pub remote_open_per_locker_burst: u32,
    pub remote_open_per_locker_period_secs: u64,
    /// Opens of one locker within the window that need nobody else; each further one waits
    /// for a second person's approval (0: every remote open needs approval).
    pub remote_open_window_max: u32,
    pub remote_open_window_secs: u64,
    /// How long a remote open waits for approval before it expires.
    pub remote_open_approval_ttl_secs: u64,
}

/// Whether keypad pickup codes need the recipient's second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecondFactor {
    /// A code without the right factor never opens (the secure default).
    Required,
    /// A code sent without any factor is checked alone (for fleets still on 1.0 firmware); a
    /// factor that is sent is still checked. See docs/security.md §3 for the odds this gives up.
    Optional,
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
            sqlite_synchronous: SqliteSync::Full,
            write_batch_max: 256,
            write_queue: 8192,
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
            pickup_attempt_window_secs: 7200,
            pickup_lockout_secs: 900,
            pickup_lockout_max_secs: 86_400,
            pickup_second_factor: SecondFactor::Required,
            directory_lookups_per_hour: 30,
            device_heartbeat_secs: 20,
            device_timeout_secs: 60,
            deposit_timeout_secs: 300,
            device_call_timeout_secs: 30,
            kiosk_interaction_timeout_secs: 120,
            offline_clock_skew_secs: 300,
            offline_list_kdf_m_kib: 19 * 1024,
            offline_list_kdf_t: 2,
            device_call_retention_secs: 86_400,
            dwell_hours: 72,
            reservation_hours: 24,
            booking_offline_grace_secs: 3600,
            webhook_retry_base_ms: 5_000,
            webhook_max_attempts: 15,
            webhook_timeout_secs: 10,
            operator_webhook_url: None,
            operator_webhook_secret: None,
            outbox_poll_ms: 30_000,
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
            notifications_paused: false,
            hour_ms: 3_600_000,
            reminder_offsets_hours: vec![24, 4],
            deadline_scan_ms: 1_000,
            remote_open_per_key_burst: 10,
            remote_open_per_key_period_secs: 360,
            remote_open_per_locker_burst: 5,
            remote_open_per_locker_period_secs: 12,
            remote_open_window_max: 3,
            remote_open_window_secs: 600,
            remote_open_approval_ttl_secs: 900,
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
  sqlite_synchronous          LOCKERHUB_SQLITE_SYNCHRONOUS          full (or normal: a power cut may lose
                                                                    the last acknowledged commits)
  write_batch_max             LOCKERHUB_WRITE_BATCH_MAX             256 operations per SQLite commit
  write_queue                 LOCKERHUB_WRITE_QUEUE                 8192 (more waiting writes get 503)
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
  pickup_attempt_window_secs  LOCKERHUB_PICKUP_ATTEMPT_WINDOW_SECS  7200 (wrong codes refill one per window/attempts)
  pickup_lockout_secs         LOCKERHUB_PICKUP_LOCKOUT_SECS         900 (first lockout; each next one doubles)
  pickup_lockout_max_secs     LOCKERHUB_PICKUP_LOCKOUT_MAX_SECS     86400 (cap; this long without a wrong
                                                                    code forgives the escalation)
  pickup_second_factor        LOCKERHUB_PICKUP_SECOND_FACTOR        required (or optional, for 1.0 kiosks)
  directory_lookups_per_hour  LOCKERHUB_DIRECTORY_LOOKUPS_PER_HOUR  30 per locker (SearchDirectory + phone)
  device_heartbeat_secs       LOCKERHUB_DEVICE_HEARTBEAT_SECS       20 (WebSocket ping interval)
  device_timeout_secs         LOCKERHUB_DEVICE_TIMEOUT_SECS         60 (silent devices are dropped)
  deposit_timeout_secs        LOCKERHUB_DEPOSIT_TIMEOUT_SECS        300 (an unfinished deposit is cancelled)
  device_call_timeout_secs    LOCKERHUB_DEVICE_CALL_TIMEOUT_SECS    30 (a remote open unanswered by then is
                                                                    reported as outcome unknown, never replayed)
  kiosk_interaction_timeout_secs LOCKERHUB_KIOSK_INTERACTION_TIMEOUT_SECS 120 (10-3600; a courier code binds
                                                                    deposits to its carrier until this silence)
  offline_clock_skew_secs     LOCKERHUB_OFFLINE_CLOCK_SKEW_SECS     300 (0-3600; a 1.1 locker's clock allowance
                                                                    for QR token expiry offline)
  offline_list_kdf_m_kib      LOCKERHUB_OFFLINE_LIST_KDF_M_KIB      19456 (Argon2id memory of local code list
                                                                    verifiers; 8-262144)
  offline_list_kdf_t          LOCKERHUB_OFFLINE_LIST_KDF_T          2 (Argon2id passes; 1-10)
  device_call_retention_secs  LOCKERHUB_DEVICE_CALL_RETENTION_SECS  86400 (answers kept for retries across a restart;
                                                                    at most 512 per locker)
  dwell_hours                 LOCKERHUB_DWELL_HOURS                 72
  reservation_hours           LOCKERHUB_RESERVATION_HOURS           24
  booking_offline_grace_secs  LOCKERHUB_BOOKING_OFFLINE_GRACE_SECS  3600 (a locker offline longer is unavailable to
                                                                    bookings)
  webhook_retry_base_ms       LOCKERHUB_WEBHOOK_RETRY_BASE_MS       5000 (doubles per attempt, capped at 8 h, with jitter)
  webhook_max_attempts        LOCKERHUB_WEBHOOK_MAX_ATTEMPTS        15 (about a day), then dead-lettered
  webhook_timeout_secs        LOCKERHUB_WEBHOOK_TIMEOUT_SECS        10
  operator_webhook_url        LOCKERHUB_OPERATOR_WEBHOOK_URL        (none) operator alerts as signed webhooks
  operator_webhook_secret     LOCKERHUB_OPERATOR_WEBHOOK_SECRET     whsec_... (required with the URL)
  outbox_poll_ms              LOCKERHUB_OUTBOX_POLL_MS              30000 (a safety net: commits wake the outbox actors)
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
  notifications_paused        LOCKERHUB_NOTIFICATIONS_PAUSED        false (true: queue, do not send)
Deadlines:
  reminder_offsets_hours      LOCKERHUB_REMINDER_OFFSETS_HOURS      [24, 4] (hours before the deadline)
  deadline_scan_ms            LOCKERHUB_DEADLINE_SCAN_MS            1000
  hour_ms                     LOCKERHUB_HOUR_MS                     3600000 (the clock's hour; for tests)
Remote opens (see docs/security.md):
  remote_open_per_key_burst   LOCKERHUB_REMOTE_OPEN_PER_KEY_BURST   10 per admin key, then 429
  remote_open_per_key_period_secs LOCKERHUB_REMOTE_OPEN_PER_KEY_PERIOD_SECS 360 (one more per period)
  remote_open_per_locker_burst LOCKERHUB_REMOTE_OPEN_PER_LOCKER_BURST 5 per locker, then 429
  remote_open_per_locker_period_secs LOCKERHUB_REMOTE_OPEN_PER_LOCKER_PERIOD_SECS 12 (one more per period)
  remote_open_window_max      LOCKERHUB_REMOTE_OPEN_WINDOW_MAX      3 opens of one locker per window; further
                                                                    ones wait for a second person's approval
  remote_open_window_secs     LOCKERHUB_REMOTE_OPEN_WINDOW_SECS     600
  remote_open_approval_ttl_secs LOCKERHUB_REMOTE_OPEN_APPROVAL_TTL_SECS 900 (then the request expires)
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
            .merge(EnvSettings(Env::raw().only(&["DATABASE_URL"])))
            .merge(EnvSettings(Env::prefixed("LOCKERHUB_").ignore(&["CONFIG"])));
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
        if self.pickup_lockout_secs == 0 || self.pickup_lockout_max_secs < self.pickup_lockout_secs {
            return Err("pickup_lockout_secs must be positive and at most pickup_lockout_max_secs".into());
        }
        if self.directory_lookups_per_hour == 0 {
            return Err("directory_lookups_per_hour must be positive".into());
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
        if self.write_batch_max == 0 || self.write_queue == 0 {
            return Err("write_batch_max and write_queue must be positive".into());
        }
        if !(10..=3600).contains(&self.kiosk_interaction_timeout_secs) {
            return Err("kiosk_interaction_timeout_secs must be between 10 and 3600".into());
        }
        if let Some(u) = &self.operator_webhook_url {
            let ok = url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err("operator_webhook_url must be an http or https URL".into());
            }
            let secret = self
                .operator_webhook_secret
                .as_ref()
                .map(Secret::expose)
                .unwrap_or_default();
            let key = secret.strip_prefix("whsec_").unwrap_or_default();
            use base64::Engine;
            if base64::engine::general_purpose::STANDARD
                .decode(key)
                .map_or(true, |k| k.len() < 16)
            {
                return Err("operator_webhook_secret must be whsec_ and base64 of at least 16 bytes".into());
            }
        }
        if !self.offline_list_kdf().valid() {
            return Err("offline_list_kdf_m_kib must be 8 to 262144 and offline_list_kdf_t 1 to 10".into());
        }
        if self.offline_clock_skew_secs > 3600 {
            return Err("offline_clock_skew_secs must be between 0 and 3600".into());
        }
        if self.device_call_retention_secs == 0 {
            return Err("device_call_retention_secs must be positive".into());
        }
        if self.remote_open_per_key_burst == 0
            || self.remote_open_per_key_period_secs == 0
            || self.remote_open_per_locker_burst == 0
            || self.remote_open_per_locker_period_secs == 0
            || self.remote_open_window_secs == 0
            || self.remote_open_approval_ttl_secs == 0
        {
            return Err("remote_open_* bursts, periods, window and approval TTL must be positive".into());
        }
        if self.device_heartbeat_secs == 0 || self.device_timeout_secs <= self.device_heartbeat_secs {
            return Err("device_timeout_secs must be greater than device_heartbeat_secs > 0".into());
        }
        Ok(())
    }

    /// The database URL as configured (it may hold a password): `database_url`, or a SQLite
    /// file in `data_dir`. `db::DatabaseUrl::parse` checks it; config knows nothing of the
    /// database layer.
    pub fn database_location(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_string(),
            None => format!("sqlite://{}", self.data_dir.join("lockerhub.db").display()),
        }
    }

    /// The deposit rules this configuration sets, on the application's clock.
    pub fn deposit_policy(&self, clock: crate::clock::Clock) -> crate::domain::deposit::DepositPolicy {
        crate::domain::deposit::DepositPolicy {
            pickup_code_length: self.pickup_code_length,
            dwell_hours: i64::from(self.dwell_hours),
            reminder_offsets_hours: self.reminder_offsets_hours.clone(),
            clock,
        }
    }

    /// A new clock with this configuration's hour. A running application has one, shared by
    /// everything in it (`AppState::clock`); use that one to read the time.
    pub fn clock(&self) -> crate::clock::Clock {
        crate::clock::Clock::new(Duration::from_millis(self.hour_ms))
    }

    /// The remote-open rate limits these settings describe.
    pub fn remote_open_quota(&self) -> crate::ratelimit::RemoteOpenQuota {
        crate::ratelimit::RemoteOpenQuota {
            per_key_burst: self.remote_open_per_key_burst,
            per_key_period: Duration::from_secs(self.remote_open_per_key_period_secs),
            per_locker_burst: self.remote_open_per_locker_burst,
            per_locker_period: Duration::from_secs(self.remote_open_per_locker_period_secs),
        }
    }

    pub fn db_connect_timeout(&self) -> Duration {
        Duration::from_secs(self.db_connect_timeout_secs)
    }

    /// The Argon2id parameters of local code list verifiers.
    pub fn offline_list_kdf(&self) -> crate::offline_list::Kdf {
        crate::offline_list::Kdf {
            m_kib: self.offline_list_kdf_m_kib,
            t: self.offline_list_kdf_t,
            ..crate::offline_list::Kdf::DEFAULT
        }
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

/// Settings whose values are text. Their environment variables are taken verbatim: figment
/// would otherwise read `LOCKERHUB_SMS_FROM=+15550000000` as a number (and refuse to start),
/// `0123` as 123 or `true` as a boolean. A test checks that this list names every text setting.
const TEXT_SETTINGS: &[&str] = &[
    "host",
    "data_dir",
    "database_url",
    "log_level",
    "log_format",
    "sqlite_synchronous",
    "secret_key",
    "public_url",
    "smtp_host",
    "smtp_tls",
    "smtp_username",
    "smtp_password",
    "mail_from",
    "sms_url",
    "sms_username",
    "sms_password",
    "sms_from",
    "sms_format",
    "push_url",
    "push_token",
    "templates_dir",
    "pickup_second_factor",
    "operator_webhook_url",
    "operator_webhook_secret",
];

/// Environment variables as settings: text settings keep their value as written; every other
/// setting is parsed as figment does (numbers, booleans, `[24, 4]` lists).
struct EnvSettings(Env);

impl Provider for EnvSettings {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, raw) in self.0.iter() {
            let key = key.as_str().to_ascii_lowercase();
            let value = if TEXT_SETTINGS.contains(&key.as_str()) {
                Value::from(raw)
            } else {
                raw.parse().unwrap_or_else(|never| match never {})
            };
            dict.insert(key, value);
        }
        Ok(Profile::Default.collect(dict))
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

    /// Every setting that is text (a string, or absent by default: all optional settings are
    /// text) is read verbatim from the environment.
    #[test]
    fn offline_and_operator_settings_are_checked() {
        let with = |f: &dyn Fn(&mut Settings)| {
            let mut s = Settings::default();
            f(&mut s);
            s.validate()
        };
        assert!(with(&|_| {}).is_ok());
        assert!(with(&|s| s.offline_clock_skew_secs = 3601).is_err());
        assert!(with(&|s| s.offline_list_kdf_m_kib = 1).is_err());
        assert!(with(&|s| s.offline_list_kdf_t = 0).is_err());
        let url = |s: &mut Settings| s.operator_webhook_url = Some("https://ops.example.org/alerts".into());
        assert!(with(&|s| url(s)).is_err(), "a URL needs a secret");
        assert!(with(&|s| {
            url(s);
            s.operator_webhook_secret = Some(Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        })
        .is_ok());
        assert!(with(&|s| {
            s.operator_webhook_url = Some("ftp://x".into());
            s.operator_webhook_secret = Some(Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        })
        .is_err());
    }

    #[test]
    fn text_settings_list_is_complete() {
        let defaults = Serialized::defaults(Settings::default()).data().unwrap();
        let dict = &defaults[&Profile::Default];
        for (field, value) in dict {
            let text = matches!(value, Value::String(..) | Value::Empty(..));
            assert_eq!(
                text,
                TEXT_SETTINGS.contains(&field.as_str()),
                "{field}: text setting or not"
            );
        }
        for t in TEXT_SETTINGS {
            assert!(dict.contains_key(*t), "{t} is a setting");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment's own error
    fn numeric_looking_text_stays_text() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LOCKERHUB_SMS_FROM", "+15550000000");
            jail.set_env("LOCKERHUB_SMTP_PASSWORD", "0123");
            jail.set_env("LOCKERHUB_SMTP_USERNAME", "true");
            jail.set_env("LOCKERHUB_SMS_PASSWORD", "1e5");
            jail.set_env("LOCKERHUB_PUSH_TOKEN", "[1, 2]");
            jail.set_env("LOCKERHUB_SECRET_KEY", "1".repeat(64));
            jail.set_env("LOCKERHUB_PORT", "9090");
            jail.set_env("LOCKERHUB_REMINDER_OFFSETS_HOURS", "[12, 2]");
            jail.set_env("DATABASE_URL", "sqlite://1234");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.sms_from, "+15550000000");
            assert_eq!(s.smtp_password.as_ref().map(Secret::expose), Some("0123"));
            assert_eq!(s.smtp_username.as_deref(), Some("true"));
            assert_eq!(s.sms_password.as_ref().map(Secret::expose), Some("1e5"));
            assert_eq!(s.push_token.as_ref().map(Secret::expose), Some("[1, 2]"));
            assert_eq!(s.secret_key.as_ref().map(Secret::expose), Some("1".repeat(64).as_str()));
            assert_eq!(s.database_url.as_ref().map(Secret::expose), Some("sqlite://1234"));
            assert_eq!(s.port, 9090, "numbers are still numbers");
            assert_eq!(s.reminder_offsets_hours, vec![12, 2], "lists are still lists");
            jail.set_env("LOCKERHUB_PORT", "eighty");
            let err = Settings::load(None).unwrap_err();
            assert!(err.contains("PORT") || err.contains("port"), "{err}");
            Ok(())
        });
    }

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
        assert_eq!(Settings::default().database_location(), "sqlite://data/lockerhub.db");
    }
}
