//! Provisioning through the admin API: sites, one recipient per site, carriers (their API keys
//! and signing secrets) and lockers (their device credentials), with bounded concurrency.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

use crate::http::{Api, CarrierCreds};
use crate::progress;

#[derive(Debug, Clone)]
pub struct SiteInfo {
    pub id: String,
    /// The phone of the site's one recipient.
    pub phone: String,
}

#[derive(Debug, Clone)]
pub struct LockerCreds {
    pub id: String,
    pub credential: String,
    pub site: usize,
}

pub struct World {
    pub sites: Vec<SiteInfo>,
    pub carriers: Vec<CarrierCreds>,
    pub lockers: Vec<LockerCreds>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProvisionReport {
    pub sites: usize,
    pub recipients: usize,
    pub carriers: usize,
    pub lockers: usize,
    pub compartments_per_locker: u32,
    pub secs: f64,
    pub lockers_secs: f64,
    pub lockers_per_sec: f64,
    pub concurrency: usize,
    /// Requests retried after a 5xx or 429 (each a server-side failure under concurrency).
    pub retried_requests: u64,
}

pub struct Plan {
    pub lockers: usize,
    pub lockers_per_site: usize,
    pub carriers: u32,
    pub compartments: u32,
    pub concurrency: usize,
    /// Makes codes and names unique to this run (an external server may hold earlier runs).
    pub tag: String,
    /// Where the carriers' webhooks go (`--webhooks`), if anywhere.
    pub webhook_url: Option<String>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> anyhow::Result<&'a str> {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().with_context(|| format!("no {} in {v}", path.join(".")))
}

/// Runs `make(i)` for i in 0..n, `concurrency` at a time, keeping the results in order.
async fn bounded<T, F, Fut>(
    n: usize,
    concurrency: usize,
    phase: &str,
    deadline: Instant,
    make: F,
) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let pb = progress::bar(n as u64, phase);
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut stream = futures_util::stream::iter(0..n)
        .map(|i| {
            let f = make(i);
            async move { (i, f.await) }
        })
        .buffer_unordered(concurrency);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let all = async {
        while let Some((i, r)) = stream.next().await {
            out[i] = Some(r?);
            pb.inc(1);
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(remaining, all).await {
        Ok(r) => r?,
        Err(_) => bail!("{phase}: not done within the phase time bound"),
    }
    pb.finish_and_clear();
    Ok(out.into_iter().map(|o| o.expect("every index completed")).collect())
}

pub async fn provision(api: &Api, plan: &Plan, within: Duration) -> anyhow::Result<(World, ProvisionReport)> {
    let started = Instant::now();
    let deadline = started + within;
    let n_sites = plan.lockers.div_ceil(plan.lockers_per_site);
    let c = plan.concurrency;

    let sites = bounded(n_sites, c, "sites", deadline, |i| async move {
        let v = api
            .create(
                "/api/v1/sites",
                &json!({"name": format!("Load site {} {i}", plan.tag), "address": format!("{i} Load St"),
                        "time_zone": "America/New_York"}),
            )
            .await?;
        Ok(str_at(&v, &["id"])?.to_string())
    })
    .await?;

    let sites = bounded(n_sites, c, "recipients", deadline, |i| {
        let site = sites[i].clone();
        async move {
            // 11 digits: +1 555 and the site's number.
            let phone = format!("+1555{:07}", i % 10_000_000);
            api.create(
                "/api/v1/recipients",
                &json!({"site_id": site, "name": format!("Resident {i}"), "unit": "1A", "phone": phone}),
            )
            .await?;
            Ok(SiteInfo { id: site, phone })
        }
    })
    .await?;

    let carriers = bounded(plan.carriers as usize, c, "carriers", deadline, |i| async move {
        let code = format!("lt-{}-{i}", plan.tag.to_ascii_lowercase());
        let mut body = json!({"code": code, "name": format!("Load carrier {i}")});
        if let Some(url) = &plan.webhook_url {
            body["webhook_url"] = json!(url);
            body["webhook_rate_per_sec"] = json!(1000);
            body["webhook_concurrency"] = json!(64);
        }
        let v = api.create("/api/v1/carriers", &body).await?;
        Ok(CarrierCreds {
            id: str_at(&v, &["carrier", "id"])?.to_string(),
            api_key: str_at(&v, &["secrets", "api_key"])?.to_string(),
            secret: str_at(&v, &["secrets", "webhook_secret"])?.to_string(),
        })
    })
    .await?;

    let lockers_started = Instant::now();
    let lockers = bounded(plan.lockers, c, "lockers", deadline, |i| {
        let site = i / plan.lockers_per_site;
        let site_id = sites[site].id.clone();
        async move {
            let v = api
                .create(
                    "/api/v1/lockers",
                    &json!({"site_id": site_id, "name": format!("Locker {i}"),
                            "layout": [{"size": "S", "count": plan.compartments}]}),
                )
                .await?;
            Ok(LockerCreds {
                id: str_at(&v, &["locker", "id"])?.to_string(),
                credential: str_at(&v, &["device_credential"])?.to_string(),
                site,
            })
        }
    })
    .await?;
    let lockers_secs = lockers_started.elapsed().as_secs_f64();

    let report = ProvisionReport {
        sites: sites.len(),
        recipients: sites.len(),
        carriers: carriers.len(),
        lockers: lockers.len(),
        compartments_per_locker: plan.compartments,
        secs: started.elapsed().as_secs_f64(),
        lockers_secs,
        lockers_per_sec: lockers.len() as f64 / lockers_secs.max(1e-9),
        concurrency: c,
        retried_requests: api.retries.load(std::sync::atomic::Ordering::Relaxed),
    };
    Ok((
        World {
            sites,
            carriers,
            lockers,
        },
        report,
    ))
}

/// A world for the echo server: nothing to provision, the same shapes.
pub fn echo_world(lockers: usize, lockers_per_site: usize, carriers: u32) -> World {
    let n_sites = lockers.div_ceil(lockers_per_site);
    World {
        sites: (0..n_sites)
            .map(|i| SiteInfo {
                id: format!("echo-site-{i}"),
                phone: format!("+1555{:07}", i % 10_000_000),
            })
            .collect(),
        carriers: (0..carriers)
            .map(|i| CarrierCreds {
                id: format!("echo-carrier-{i}"),
                api_key: "echo".into(),
                // 32 zero bytes, base64: signing costs the same as with a real secret.
                secret: "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
            })
            .collect(),
        lockers: (0..lockers)
            .map(|i| LockerCreds {
                id: format!("echo-{i}"),
                credential: "echo".into(),
                site: i / lockers_per_site,
            })
            .collect(),
    }
}
