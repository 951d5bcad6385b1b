//! The NotificationActor: sends each queued notification through the recipient's preferred
//! channel, retrying transient failures with backoff, moving to the next channel on a
//! permanent one, and recording every outcome. A channel with no transport configured goes
//! to the log transport (the log and the database), so a default install shows what would
//! have been sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::TimeZone;
use serde_json::{json, Value};

use super::messages::Kick;
use super::outbox_slots::{OutboxSlots, WakeTimer};
use super::retry::{backoff, until};
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::notifications::{self, AttemptOutcome, Context as MsgContext, Notification};
use crate::db::Db;
use crate::domain::inputs::Channel;
use crate::notify::channels::{self, Email, Rendered, SendError};
use crate::notify::templates::Templates;

/// Notifications in flight at once.
const CONCURRENCY: usize = 8;

pub struct NotificationActor {
    db: Db,
    settings: Arc<Settings>,
    /// Retries come due on the application's clock, which tests move instead of sleeping.
    clock: Clock,
    templates: Templates,
    email: Option<Arc<Email>>,
    http: Option<awc::Client>,
    slots: OutboxSlots,
    /// The next pump: a retry coming due.
    timer: WakeTimer,
}

/// What one attempt ended in.
enum Outcome {
    Sent {
        channel: String,
        record: Value,
    },
    Retry {
        channel: String,
        error: String,
    },
    /// `from` failed for good; `channel` is tried next.
    Switch {
        from: String,
        channel: String,
        error: String,
    },
    /// Given up; `channel` is the one that failed, if one could be tried.
    Dead {
        channel: Option<String>,
        error: String,
    },
}

impl Outcome {
    /// The attempt as the notification log records it: every attempt, with its channel and
    /// error, whatever the outbox row says afterwards.
    fn attempt(&self) -> (Option<&str>, AttemptOutcome, Option<&str>) {
        match self {
            Outcome::Sent { channel, .. } => (Some(channel), AttemptOutcome::Sent, None),
            Outcome::Retry { channel, error } => (Some(channel), AttemptOutcome::TransientFailure, Some(error)),
            Outcome::Switch { from, error, .. } => (Some(from), AttemptOutcome::PermanentFailure, Some(error)),
            Outcome::Dead { channel, error } => (channel.as_deref(), AttemptOutcome::PermanentFailure, Some(error)),
        }
    }
}

impl NotificationActor {
    /// Settings are validated at start (Application::build); a bad SMTP setting here would
    /// only fall back to the log transport.
    pub fn new(db: Db, settings: Arc<Settings>, clock: Clock) -> Self {
        let email = Email::from_settings(&settings).unwrap_or_else(|e| {
            tracing::error!(error = %e, "email transport disabled");
            None
        });
        if email.is_none() && settings.sms_url.is_none() && settings.push_url.is_none() {
            tracing::warn!(
                "no SMTP, SMS or push transport configured: notifications go to the log transport, \
                 and the log will contain pickup codes; configure a transport for production"
            );
        }
        let templates = Templates::new(settings.templates_dir.clone());
        Self {
            db,
            templates,
            settings,
            clock,
            email: email.map(Arc::new),
            http: None,
            slots: OutboxSlots::default(),
            timer: WakeTimer::default(),
        }
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        let Some(read) = self.slots.begin_read(CONCURRENCY) else {
            return;
        };
        let (db, at) = (self.db.clone(), self.clock.now());
        ctx.spawn(
            async move {
                db.read(move |c| {
                    let due = notifications::due(c, &read.exclude, read.room as i64, at)?;
                    Ok((due, notifications::next_due(c, at)?))
                })
                .await
            }
            .into_actor(self)
            .map(move |res, act, ctx| {
                match res {
                    Ok((due, next)) => {
                        if let Some(at) = next {
                            act.pump_in(until(at, act.clock.now()), ctx);
                        }
                        for n in due {
                            if act.slots.is_fresh(&n.id) {
                                act.slots.claim(&n.id);
                                act.process(n, ctx);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read notification outbox"),
                }
                act.slots.end_read();
            }),
        );
    }

    /// Pumps after `wait` (a retry coming due), unless a pump is already scheduled.
    fn pump_in(&mut self, wait: Duration, ctx: &mut Context<Self>) {
        self.timer.wake_in(wait, ctx, |act: &mut Self, ctx| {
            act.timer.clear();
            act.pump(ctx);
        });
    }

    fn process(&mut self, n: Notification, ctx: &mut Context<Self>) {
        let db = self.db.clone();
        let settings = self.settings.clone();
        let clock = self.clock.clone();
        let templates = self.templates.clone();
        let email = self.email.clone();
        let http = self
            .http
            .get_or_insert_with(|| awc::Client::builder().timeout(Duration::from_secs(15)).finish())
            .clone();
        let id = n.id.clone();
        let work = async move {
            let (pid, rid) = (n.parcel_id.clone(), n.recipient_id.clone());
            let outcome = match db
                .read(move |c| Ok(notifications::context(c, &pid, rid.as_deref())?))
                .await
            {
                Ok(mc) => attempt(&n, &mc, &settings, &templates, email.as_deref(), &http).await,
                Err(e) => Outcome::Retry {
                    channel: n.channel.clone().unwrap_or_default(),
                    error: format!("context: {e}"),
                },
            };
            let (nid, attempts, max) = (n.id.clone(), n.attempts + 1, settings.notification_max_attempts);
            let base = Duration::from_millis(settings.notification_retry_base_ms);
            let saved = db
                .transaction(move |c| {
                    let (channel, kind, error) = outcome.attempt();
                    notifications::record_attempt(c, &nid, channel, kind, error)?;
                    match outcome {
                        Outcome::Sent { channel, record } => notifications::mark_sent(c, &nid, &channel, record)?,
                        Outcome::Retry { channel, error } if attempts < max => {
                            let at = clock.now()
                                + chrono::Duration::from_std(backoff(base, attempts))
                                    .unwrap_or(chrono::Duration::hours(1));
                            notifications::mark_retry(c, &nid, &channel, at, &error)?
                        }
                        // Out of attempts on this channel: treat it as a permanent failure.
                        Outcome::Retry { channel, error } => match next_channel(c, &nid, &channel)? {
                            Some(next) => notifications::switch_channel(c, &nid, &next, &error)?,
                            None => notifications::mark_dead(c, &nid, &error)?,
                        },
                        Outcome::Switch { channel, error, .. } => {
                            notifications::switch_channel(c, &nid, &channel, &error)?
                        }
                        Outcome::Dead { error, .. } => notifications::mark_dead(c, &nid, &error)?,
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = saved {
                tracing::error!(notification = %n.id, error = %e, "cannot record notification outcome");
            }
        };
        // The pump after an attempt also sets the timer for the next retry coming due.
        ctx.spawn(work.into_actor(self).map(move |_, act, ctx| {
            act.slots.finish(&id);
            act.pump(ctx);
        }));
    }
}

/// The recipient's channels in order of preference.
fn preferred(mc: &MsgContext) -> Vec<Channel> {
    mc.recipient
        .as_ref()
        .map(|r| Channel::split(&r.channels))
        .unwrap_or_default()
}

/// The channel after `current` in the recipient's preferences, if any.
fn next_channel(c: &mut crate::db::DbConn, id: &str, current: &str) -> diesel::QueryResult<Option<String>> {
    use crate::db::schema::notification_outbox as n;
    use diesel::prelude::*;
    let (pid, rid): (String, Option<String>) = n::table
        .find(id)
        .select((n::parcel_id, n::recipient_id))
        .get_result(c)?;
    let mc = notifications::context(c, &pid, rid.as_deref())?;
    let list = preferred(&mc);
    let pos = list.iter().position(|ch| ch.as_str() == current);
    Ok(pos.and_then(|p| list.get(p + 1)).map(|ch| ch.as_str().to_string()))
}

fn format_deadline(mc: &MsgContext) -> String {
    let Some(d) = mc.deadline else { return String::new() };
    let utc = chrono::Utc.from_utc_datetime(&d);
    match mc.time_zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => utc.with_timezone(&tz).format("%A %-d %B %Y, %H:%M %Z").to_string(),
        Err(_) => utc.format("%A %-d %B %Y, %H:%M UTC").to_string(),
    }
}

fn render(n: &Notification, mc: &MsgContext, s: &Settings, t: &Templates) -> Result<Rendered, String> {
    let payload: Value = serde_json::from_str(&n.payload).unwrap_or(Value::Null);
    let text = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let qr_url = match payload.get("qr_token").and_then(Value::as_str) {
        Some(tok) => format!("{}/qr/{}", s.public_url.trim_end_matches('/'), tok),
        None => String::new(),
    };
    let vars: HashMap<&str, String> = HashMap::from([
        (
            "recipient_name",
            mc.recipient
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_else(|| "there".into()),
        ),
        ("carrier", mc.carrier_name.clone()),
        ("tracking_number", mc.tracking_number.clone()),
        ("locker_name", mc.locker_name.clone()),
        ("site_name", mc.site_name.clone()),
        ("site_address", mc.site_address.clone()),
        ("pickup_code", text("pickup_code")),
        ("qr_url", qr_url),
        ("deadline", format_deadline(mc)),
    ]);
    let part = |p: &str| t.render(&mc.site_id, &n.kind, p, &vars);
    Ok(Rendered {
        subject: part("subject")?,
        text: part("text")?,
        html: part("html")?,
        sms: part("sms")?,
    })
}

async fn attempt(
    n: &Notification,
    mc: &MsgContext,
    s: &Settings,
    t: &Templates,
    email: Option<&Email>,
    http: &awc::Client,
) -> Outcome {
    let Some(r) = &mc.recipient else {
        return Outcome::Dead {
            channel: None,
            error: "the parcel has no recipient".into(),
        };
    };
    let channels = preferred(mc);
    let channel = match n.channel.as_deref().and_then(Channel::parse) {
        Some(c) => c,
        None => match channels.first() {
            Some(c) => *c,
            None => {
                return Outcome::Dead {
                    channel: None,
                    error: "the recipient has no contact details".into(),
                }
            }
        },
    };
    let rendered = match render(n, mc, s, t) {
        Ok(m) => m,
        Err(e) => {
            return Outcome::Dead {
                channel: Some(channel.as_str().to_string()),
                error: format!("template: {e}"),
            }
        }
    };
    let record = |via: &str| {
        let mut p: Value = serde_json::from_str(&n.payload).unwrap_or(json!({}));
        if let Some(o) = p.as_object_mut() {
            o.insert("transport".into(), json!(via));
            o.insert("rendered".into(), json!(rendered));
        }
        p
    };
    let to = match channel {
        Channel::Email => r.email.clone(),
        Channel::Sms => r.phone.clone(),
        Channel::Push => r.push_target.clone(),
    };
    let result = match (channel, to) {
        (_, None) => Err(SendError::Permanent(format!("no {} contact", channel.as_str()))),
        (Channel::Email, Some(to)) => match email {
            Some(e) => e.send(&to, &rendered).await.map(|_| "smtp"),
            None => Ok(log_transport(n, channel, &to, &rendered)),
        },
        (Channel::Sms, Some(to)) => match &s.sms_url {
            Some(url) => channels::send_sms(http, s, url, &to, &rendered.sms)
                .await
                .map(|_| "sms_gateway"),
            None => Ok(log_transport(n, channel, &to, &rendered)),
        },
        (Channel::Push, Some(to)) => match &s.push_url {
            Some(url) => {
                let data = json!({"parcel_id": n.parcel_id, "kind": n.kind});
                channels::send_push(http, s, url, &to, &rendered, data)
                    .await
                    .map(|_| "push_gateway")
            }
            None => Ok(log_transport(n, channel, &to, &rendered)),
        },
    };
    let ch = channel.as_str().to_string();
    match result {
        Ok(via) => Outcome::Sent {
            channel: ch,
            record: record(via),
        },
        Err(SendError::Transient(e)) => Outcome::Retry { channel: ch, error: e },
        Err(SendError::Permanent(e)) => {
            let pos = channels.iter().position(|c| *c == channel);
            match pos.and_then(|p| channels.get(p + 1)) {
                Some(next) => Outcome::Switch {
                    channel: next.as_str().to_string(),
                    error: format!("{ch}: {e}"),
                    from: ch,
                },
                None => Outcome::Dead {
                    error: format!("{ch}: {e}"),
                    channel: Some(ch),
                },
            }
        }
    }
}

/// The default transport: the message goes to the log (and, redacted, to the database).
fn log_transport(n: &Notification, channel: Channel, to: &str, m: &Rendered) -> &'static str {
    tracing::info!(
        notification = %n.id, parcel = %n.parcel_id, kind = %n.kind, channel = channel.as_str(), to,
        subject = %m.subject, text = %m.sms, "notification (log transport)"
    );
    "log"
}

impl Actor for NotificationActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.slots.clear();
        self.timer.clear();
        self.pump(ctx);
        ctx.run_interval(Duration::from_millis(self.settings.outbox_poll_ms), |act, ctx| {
            act.pump(ctx)
        });
    }
}

/// Something was queued: look at the outbox now rather than at the next scan.
impl Handler<Kick> for NotificationActor {
    type Result = ();

    fn handle(&mut self, _: Kick, ctx: &mut Context<Self>) {
        self.pump(ctx);
    }
}

impl Supervised for NotificationActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("notification actor restarting");
    }
}
