//! Operator alerts as signed webhooks (docs/protocol.md §15.9): each alert row is its own outbox
//! entry, raised in the transaction that found it; this actor sends it to
//! `operator_webhook_url`, signed like carrier webhooks (Standard Webhooks), at least once, one
//! at a time (alerts are few), with the carriers' retry schedule.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::json;

use super::carrier::{post_signed, CarrierActor};
use super::messages::Kick;
use super::retry::backoff;
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::alerts::{self, Alert};
use crate::db::Db;

/// Alerts read per pump.
const BATCH: i64 = 20;

pub struct OperatorActor {
    db: Db,
    settings: Arc<Settings>,
    clock: Clock,
    client: Option<awc::Client>,
    busy: bool,
    /// A kick came while busy: pump again after.
    again: bool,
}

impl OperatorActor {
    pub fn new(db: Db, settings: Arc<Settings>, clock: Clock) -> Self {
        Self {
            db,
            settings,
            clock,
            client: None,
            busy: false,
            again: false,
        }
    }

    /// Sends every alert that is due, one after another; then pumps again if more may be due.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            self.again = true;
            return;
        }
        let (Some(url), Some(secret)) = (
            self.settings.operator_webhook_url.clone(),
            self.settings
                .operator_webhook_secret
                .as_ref()
                .map(|s| s.expose().to_string()),
        ) else {
            return;
        };
        self.busy = true;
        self.again = false;
        let client = self
            .client
            .get_or_insert_with(|| CarrierActor::http_client(Duration::from_secs(self.settings.webhook_timeout_secs)))
            .clone();
        let (db, clock) = (self.db.clone(), self.clock.clone());
        let base = Duration::from_millis(self.settings.webhook_retry_base_ms);
        let max = self.settings.webhook_max_attempts;
        let work = async move {
            let at = clock.now();
            let due = db.read(move |c| Ok(alerts::due(c, at, BATCH)?)).await?;
            let full = due.len() as i64 == BATCH;
            for (alert, attempts) in due {
                let error = send(&client, &url, &secret, &alert).await.err();
                let next = match &error {
                    Some(_) if attempts + 1 < max => Some(
                        clock.now()
                            + chrono::Duration::from_std(backoff(base, attempts + 1))
                                .unwrap_or(chrono::Duration::hours(8)),
                    ),
                    _ => None,
                };
                let now = clock.now();
                let id = alert.id.clone();
                db.run(move |c| {
                    match &error {
                        None => alerts::delivered(c, &id, now)?,
                        Some(e) => alerts::attempt_failed(c, &id, e, next)?,
                    }
                    Ok(())
                })
                .await?;
            }
            Ok::<bool, crate::error::AppError>(full)
        };
        ctx.spawn(work.into_actor(self).map(|res, act, ctx| {
            act.busy = false;
            match res {
                Ok(full) if full => act.again = true,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "operator alerts not sent; the next scan retries"),
            }
            if std::mem::take(&mut act.again) {
                act.pump(ctx);
            }
        }));
    }
}

/// One signed POST of an alert; an error says why it did not arrive.
async fn send(client: &awc::Client, url: &str, secret: &str, alert: &Alert) -> Result<(), String> {
    let body = json!({"type": "alert.raised", "timestamp": crate::db::ts_string(crate::db::now()), "data": alert})
        .to_string()
        .into_bytes();
    let resp = post_signed(client, url, &[secret.to_string()], &alert.id, body)
        .await
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("receiver answered {}", resp.status()))
    }
}

impl Actor for OperatorActor {
    type Context = Context<Self>;

    /// Sends what a stop left behind, and scans now and then for retries coming due (a commit
    /// that raises an alert wakes it at once).
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.pump(ctx);
        let every = Duration::from_millis(self.settings.outbox_poll_ms.max(100));
        ctx.run_interval(every, |act, ctx| act.pump(ctx));
    }
}

impl Supervised for OperatorActor {}

impl Handler<Kick> for OperatorActor {
    type Result = ();

    fn handle(&mut self, _: Kick, ctx: &mut Context<Self>) {
        self.pump(ctx);
    }
}
