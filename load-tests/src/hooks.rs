//! A carrier's webhook receiver for the run (`--webhooks`): a minimal HTTP/1.1 server on
//! 127.0.0.1 that answers every POST with 204 and records, for each
//! `parcel.delivered_to_locker`, the time from the deposit (the payload's `deposited_at`, set
//! in the transaction that commits it) to the webhook's arrival: `webhook` in the report.
//!
//! Bounded: heads up to 16 KiB, bodies up to 1 MiB, a connection closes after 60 s without a
//! request, and everything stops when the receiver is dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;
const IDLE: Duration = Duration::from_secs(60);

pub struct Hooks {
    pub url: String,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Hooks {
    pub async fn start(metrics: Arc<Metrics>) -> anyhow::Result<Hooks> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        let accept = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                conns.spawn(serve(stream, metrics.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Hooks { url, accept })
    }
}

/// Serves one keep-alive connection until it closes, idles or sends something malformed.
async fn serve(mut stream: TcpStream, metrics: Arc<Metrics>) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD || !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if length > MAX_BODY {
            return;
        }
        while buf.len() < head_end + length {
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        }
        let arrived = chrono::Utc::now();
        record(&buf[head_end..head_end + length], arrived, &metrics);
        buf.drain(..head_end + length);
        if stream
            .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match tokio::time::timeout(IDLE, stream.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Records deposit-to-arrival for a `parcel.delivered_to_locker`; other events only count.
fn record(body: &[u8], arrived: chrono::DateTime<chrono::Utc>, metrics: &Metrics) {
    metrics.add("webhooks_received", 1);
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    if v["type"] != "parcel.delivered_to_locker" {
        return;
    }
    let Some(at) = v["data"]["deposited_at"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    else {
        return;
    };
    if let Ok(d) = (arrived - at.with_timezone(&chrono::Utc)).to_std() {
        metrics.record("webhook", d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_delivered_webhook_is_answered_and_timed() {
        let metrics = Arc::new(Metrics::new(std::time::Instant::now()));
        let hooks = Hooks::start(metrics.clone()).await.unwrap();
        let addr = hooks
            .url
            .trim_start_matches("http://")
            .trim_end_matches("/hooks")
            .to_string();
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let at = (chrono::Utc::now() - chrono::Duration::milliseconds(5)).to_rfc3339();
        for kind in ["parcel.delivered_to_locker", "parcel.picked_up"] {
            let body = serde_json::json!({"type": kind, "data": {"deposited_at": at}}).to_string();
            let req = format!(
                "POST /hooks HTTP/1.1\r\nhost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut answer = vec![0u8; 64];
            let n = s.read(&mut answer).await.unwrap();
            assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 204"));
        }
        assert_eq!(metrics.counter("webhooks_received"), 2);
        assert_eq!(metrics.count("webhook"), 1, "only the deposit is timed");
    }
}
