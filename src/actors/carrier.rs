//! One actor per carrier: delivers its webhooks from the outbox, at least once, signed, with
//! its own concurrency and rate limit so a slow carrier never delays another.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::messages::{Kick, ReloadCarrier};
use super::outbox_slots::{OutboxSlots, WakeTimer};
use super::retry::{backoff, retry_delay, until};

use crate::clock::Clock;
use crate::config::Settings;
use crate::credentials::ServerKey;
use crate::db::carriers::{self, Carrier};
use crate::db::outbox::{self, AttemptOutcome, Delivery};
use crate::db::{now, Db};
use crate::error::AppError;
use crate::signing;

pub struct CarrierActor {
    carrier_id: String,
    db: Db,
    key: ServerKey,
    settings: Arc<Settings>,
    /// Retries come due on the application's clock, which tests move instead of sleeping.
    clock: Clock,
    carrier: Option<Carrier>,
    client: Option<awc::Client>,
    limiter: Option<DefaultDirectRateLimiter>,
    slots: OutboxSlots,
    /// The next pump: a retry coming due, the rate limit clearing.
    timer: WakeTimer,
    loading: bool,
}

/// A webhook POST of `body` under message id `id`, signed now with every one of `secrets`
/// (Standard Webhooks headers): what carriers and the operator endpoint receive alike.
pub(crate) fn post_signed(
    client: &awc::Client,
    url: &str,
    secrets: &[String],
    id: &str,
    body: Vec<u8>,
) -> awc::SendClientRequest {
    let ts = chrono::Utc::now().timestamp();
    let signature = signing::signature_header(secrets, id, ts, &body);
    client
        .post(url)
        .insert_header(("content-type", "application/json"))
        .insert_header(("webhook-id", id.to_string()))
        .insert_header(("webhook-timestamp", ts.to_string()))
        .insert_header(("webhook-signature", signature))
        .insert_header(("user-agent", concat!("lockerhub/", env!("CARGO_PKG_VERSION"))))
        .send_body(body)
}

impl CarrierActor {
    pub fn new(carrier_id: String, db: Db, key: ServerKey, settings: Arc<Settings>, clock: Clock) -> Self {
        Self {
            carrier_id,
            db,
            key,
            settings,
            clock,
            carrier: None,
            client: None,
            limiter: None,
            slots: OutboxSlots::default(),
            timer: WakeTimer::default(),
            loading: false,
        }
    }

    pub(crate) fn http_client(timeout: Duration) -> awc::Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        awc::Client::builder()
            .connector(awc::Connector::new().rustls_0_23(Arc::new(tls)).timeout(timeout))
            .timeout(timeout)
            .disable_redirects()
            .finish()
    }

    /// Reloads the carrier's URL, secrets and limits, then pumps.
    fn reload(&mut self, ctx: &mut Context<Self>) {
        if self.loading {
            return;
        }
        self.load(0, ctx);
    }

    /// Reads the carrier; a database error is retried with backoff (a carrier that no longer
    /// exists is not).
    fn load(&mut self, attempt: u32, ctx: &mut Context<Self>) {
        self.loading = true;
        let (db, id) = (self.db.clone(), self.carrier_id.clone());
        ctx.spawn(
            async move { db.read(move |c| Ok(carriers::get(c, &id)?)).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.loading = false;
                    match res {
                        Ok(c) => {
                            let rate = NonZeroU32::new(c.webhook_rate_per_sec.max(1) as u32).expect("positive");
                            act.limiter = Some(RateLimiter::direct(Quota::per_second(rate)));
                            act.carrier = Some(c);
                            act.pump(ctx);
                        }
                        Err(e @ AppError::NotFound(_)) => {
                            tracing::warn!(carrier = %act.carrier_id, error = %e, "cannot load carrier")
                        }
                        Err(e) => {
                            let wait = retry_delay(attempt);
                            tracing::warn!(carrier = %act.carrier_id, error = %e,
                                retry_in_ms = wait.as_millis() as u64, "cannot load carrier");
                            act.loading = true;
                            ctx.run_later(wait, move |act, ctx| act.load(attempt + 1, ctx));
                        }
                    }
                }),
        );
    }

    /// Starts as many due deliveries as the concurrency and rate limits allow.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let Some(carrier) = &self.carrier else { return };
        if !carrier.active || carrier.webhook_url.is_none() {
            return;
        }
        let Some(read) = self.slots.begin_read(carrier.webhook_concurrency.max(1) as usize) else {
            return;
        };
        let (db, id, at) = (self.db.clone(), self.carrier_id.clone(), self.clock.now());
        ctx.spawn(
            async move {
                db.read(move |c| {
                    let due = outbox::due_webhooks(c, &id, &read.exclude, read.room as i64, at)?;
                    Ok((due, outbox::next_webhook_due(c, &id, at)?))
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
                        for d in due {
                            if !act.slots.is_fresh(&d.id) {
                                continue;
                            }
                            if let Some(Err(not_until)) = act.limiter.as_ref().map(|l| l.check()) {
                                // Over the rate: pump again when the limit lets the next one go.
                                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                                    &governor::clock::DefaultClock::default(),
                                ));
                                act.pump_in(wait, ctx);
                                break;
                            }
                            act.slots.claim(&d.id);
                            act.deliver(d, ctx);
                        }
                    }
                    Err(e) => tracing::warn!(carrier = %act.carrier_id, error = %e, "cannot read outbox"),
                }
                act.slots.end_read();
            }),
        );
    }

    /// Pumps after `wait` (a retry coming due, the rate limit clearing), unless an earlier
    /// pump is already scheduled.
    fn pump_in(&mut self, wait: Duration, ctx: &mut Context<Self>) {
        self.timer.wake_in(wait, ctx, |act: &mut Self, ctx| {
            act.timer.clear();
            act.pump(ctx);
        });
    }

    fn deliver(&mut self, d: Delivery, ctx: &mut Context<Self>) {
        let Some(carrier) = &self.carrier else { return };
        let Some(url) = carrier.webhook_url.clone() else { return };
        let client = self
            .client
            .get_or_insert_with(|| Self::http_client(Duration::from_secs(self.settings.webhook_timeout_secs)));
        let secrets = carrier.signing_secrets(&self.key, now());
        let started = Instant::now();
        let send = post_signed(client, &url, &secrets, &d.id, d.payload.clone().into_bytes());
        let attempt = d.attempts + 1;
        let base = Duration::from_millis(self.settings.webhook_retry_base_ms);
        let max = self.settings.webhook_max_attempts;
        let db = self.db.clone();
        let id = d.id.clone();
        let carrier_id = self.carrier_id.clone();
        let clock = self.clock.clone();
        let work = async move {
            let (code, error) = match send.await {
                Ok(resp) if resp.status().is_success() => (Some(resp.status().as_u16()), None),
                Ok(resp) => (
                    Some(resp.status().as_u16()),
                    Some(format!("receiver answered {}", resp.status())),
                ),
                Err(e) => (None, Some(e.to_string())),
            };
            let outcome = match (&error, attempt >= max) {
                (None, _) => AttemptOutcome::Delivered,
                (Some(_), true) => AttemptOutcome::Dead,
                (Some(_), false) => AttemptOutcome::RetryAt(
                    clock.now()
                        + chrono::Duration::from_std(backoff(base, attempt)).unwrap_or(chrono::Duration::hours(8)),
                ),
            };
            let ms = started.elapsed().as_millis() as u64;
            match &outcome {
                AttemptOutcome::Delivered => {
                    tracing::debug!(carrier = %carrier_id, delivery = %id, ms, "webhook delivered")
                }
                AttemptOutcome::Dead => {
                    tracing::warn!(carrier = %carrier_id, delivery = %id, ?error, "webhook dead-lettered")
                }
                AttemptOutcome::RetryAt(at) => {
                    tracing::info!(carrier = %carrier_id, delivery = %id, ?error, retry_at = %at, "webhook failed")
                }
            }
            let id2 = id.clone();
            let saved = db
                .run(move |c| Ok(outbox::record_attempt(c, &id2, code, error.as_deref(), ms, &outcome)?))
                .await;
            if let Err(e) = saved {
                // Not recorded: the delivery stays due and is sent again (at least once).
                tracing::error!(delivery = %id, error = %e, "cannot record webhook attempt");
            }
            id
        };
        // The pump after an attempt also sets the timer for the next retry coming due.
        ctx.spawn(work.into_actor(self).map(|id, act, ctx| {
            act.slots.finish(&id);
            act.pump(ctx);
        }));
    }
}

impl Actor for CarrierActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.slots.clear();
        self.timer.clear();
        self.reload(ctx);
        let every = Duration::from_millis(self.settings.outbox_poll_ms);
        ctx.run_interval(every, |act, ctx| act.pump(ctx));
    }
}

impl Supervised for CarrierActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(carrier = %self.carrier_id, "carrier actor restarting");
        self.loading = false;
    }
}

impl Handler<Kick> for CarrierActor {
    type Result = ();

    fn handle(&mut self, _: Kick, ctx: &mut Context<Self>) {
        self.pump(ctx);
    }
}

impl Handler<ReloadCarrier> for CarrierActor {
    type Result = ();

    fn handle(&mut self, _: ReloadCarrier, ctx: &mut Context<Self>) {
        self.reload(ctx);
    }
}
