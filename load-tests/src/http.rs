//! HTTP to the target: the admin API (Bearer admin key) and signed carrier callbacks. A small
//! HTTP/1.1 client with keep-alive connections over tokio, to a loopback address only (checked
//! by the caller); no TLS, no proxy, no redirects.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Attempts of one provisioning request.
const ATTEMPTS: u32 = 8;
/// Bound on one request, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read.
const MAX_BODY: usize = 64 << 20;
/// Idle keep-alive connections kept.
const MAX_IDLE: usize = 1024;
/// Default bound on open HTTP connections: each is a file descriptor here and in the server,
/// which also holds one per locker session.
pub const DEFAULT_CONNECTIONS: usize = 64;

type Conn = BufReader<TcpStream>;

/// Keep-alive connections to one address.
struct Pool {
    addr: SocketAddr,
    host: String,
    idle: Mutex<Vec<Conn>>,
    /// One permit per connection in use: requests beyond it wait for a connection.
    permits: tokio::sync::Semaphore,
}

enum Failure {
    /// A reused connection the server had already closed: nothing was processed, retry.
    Stale,
    Io(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Io(e.into())
    }
}

impl Pool {
    async fn send(&self, req: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(conn) = pooled {
            match Self::exchange(conn, req, true).await {
                Ok((status, body, conn)) => return Ok(self.keep(status, body, conn)),
                Err(Failure::Stale) => {}
                Err(Failure::Io(e)) => return Err(e),
            }
        }
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect {}", self.addr))?;
        stream.set_nodelay(true)?;
        match Self::exchange(BufReader::new(stream), req, false).await {
            Ok((status, body, conn)) => Ok(self.keep(status, body, conn)),
            Err(Failure::Stale) => bail!("{} closed the connection without answering", self.addr),
            Err(Failure::Io(e)) => Err(e),
        }
    }

    fn keep(&self, status: u16, body: Vec<u8>, conn: Option<Conn>) -> (u16, Vec<u8>) {
        if let Some(c) = conn {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(c);
            }
        }
        (status, body)
    }

    /// Writes one request and reads its response; the connection comes back if it may be reused.
    async fn exchange(mut conn: Conn, req: &[u8], reused: bool) -> Result<(u16, Vec<u8>, Option<Conn>), Failure> {
        let stale = |e: std::io::Error| {
            if reused {
                Failure::Stale
            } else {
                Failure::Io(e.into())
            }
        };
        conn.get_mut().write_all(req).await.map_err(stale)?;
        let mut line = String::new();
        match conn.read_line(&mut line).await {
            Ok(0) if reused => return Err(Failure::Stale),
            Ok(0) => return Err(Failure::Io(anyhow!("connection closed before the status line"))),
            Ok(_) => {}
            Err(e) => return Err(stale(e)),
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let (mut length, mut chunked, mut close) = (None::<usize>, false, false);
        for _ in 0..100 {
            line.clear();
            if conn.read_line(&mut line).await? == 0 {
                return Err(Failure::Io(anyhow!("connection closed in the headers")));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase());
            match name.as_str() {
                "content-length" => length = value.parse().ok(),
                "transfer-encoding" => chunked = value.contains("chunked"),
                "connection" => close = value.contains("close"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| anyhow!("bad chunk size {line:?}"))?;
                if body.len() + size > MAX_BODY {
                    return Err(Failure::Io(anyhow!("response body over {MAX_BODY} bytes")));
                }
                let at = body.len();
                body.resize(at + size, 0);
                conn.read_exact(&mut body[at..]).await?;
                line.clear();
                conn.read_line(&mut line).await?;
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            if n > MAX_BODY {
                return Err(Failure::Io(anyhow!("response body over {MAX_BODY} bytes")));
            }
            body.resize(n, 0);
            conn.read_exact(&mut body).await?;
        } else {
            (&mut conn).take(MAX_BODY as u64).read_to_end(&mut body).await?;
            close = true;
        }
        Ok((status, body, (!close).then_some(conn)))
    }
}

#[derive(Clone)]
pub struct Api {
    pool: Arc<Pool>,
    pub base: String,
    admin_key: String,
    /// Provisioning requests retried after a 5xx or 429.
    pub retries: Arc<AtomicU64>,
}

/// A carrier as its own system holds it.
#[derive(Debug, Clone)]
pub struct CarrierCreds {
    pub id: String,
    pub api_key: String,
    pub secret: String,
}

impl Api {
    /// `base` is `http://<loopback address>:<port>` (see `sys::loopback_target`); at most
    /// `connections` requests are in flight at once.
    pub fn new(base: &str, admin_key: &str, connections: usize) -> anyhow::Result<Api> {
        let url = url::Url::parse(base).with_context(|| format!("base URL {base:?}"))?;
        let addr = url
            .socket_addrs(|| None)
            .ok()
            .and_then(|a| a.into_iter().next())
            .with_context(|| format!("base URL {base:?} has no address"))?;
        if !addr.ip().is_loopback() {
            bail!("{addr} is not a loopback address");
        }
        Ok(Api {
            pool: Arc::new(Pool {
                addr,
                host: url.host_str().unwrap_or("127.0.0.1").to_string(),
                idle: Mutex::default(),
                permits: tokio::sync::Semaphore::new(connections.max(1)),
            }),
            base: base.trim_end_matches('/').to_string(),
            admin_key: admin_key.to_string(),
            retries: Default::default(),
        })
    }

    /// Sends one request; returns the status, the JSON body and how long it took once a
    /// connection was free (the wait for one is not counted).
    async fn request_timed(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<(u16, Value, Duration)> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}:{}\r\ncontent-length: {}\r\n",
            self.pool.host,
            self.pool.addr.port(),
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        let _permit = tokio::time::timeout(REQUEST_TIMEOUT, self.pool.permits.acquire())
            .await
            .map_err(|_| anyhow!("{method} {path}: no free connection within {REQUEST_TIMEOUT:?}"))?
            .map_err(|_| anyhow!("connection pool closed"))?;
        let started = std::time::Instant::now();
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, self.pool.send(&bytes))
            .await
            .map_err(|_| anyhow!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))??;
        let took = started.elapsed();
        let v = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()))
        };
        Ok((status, v, took))
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<(u16, Value)> {
        let (s, v, _) = self.request_timed(method, path, headers, body).await?;
        Ok((s, v))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let auth = format!("Bearer {}", self.admin_key);
        self.request("GET", path, &[("authorization", &auth)], b"").await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let auth = format!("Bearer {}", self.admin_key);
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        self.request("POST", path, &headers, body.to_string().as_bytes()).await
    }

    /// Posts and expects `201 Created`, with bounded, jittered retries on 5xx/429. Each retry
    /// is counted in `retries` so provisioning reports them.
    pub async fn create(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            match self.post(path, body).await {
                Ok((201, v)) => return Ok(v),
                Ok((s, v)) if s >= 500 || s == 429 => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    last = format!("{s}: {v}");
                }
                Ok((s, v)) => bail!("POST {path}: {s}: {v}"),
                Err(e) => last = e.to_string(),
            }
            let backoff = 50u64 << attempt.min(5);
            tokio::time::sleep(Duration::from_millis(backoff + rand::random::<u64>() % backoff)).await;
        }
        Err(anyhow!("POST {path} failed {ATTEMPTS} times; last: {last}"))
    }

    /// Waits until `/healthz` answers 200, up to `within`.
    pub async fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok((200, _)) = self.request("GET", "/healthz", &[], b"").await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{} did not answer /healthz within {within:?}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Posts a carrier event signed the Standard Webhooks way; the duration is the request's,
    /// from a free connection to the answer.
    pub async fn carrier_event(
        &self,
        carrier: &CarrierCreds,
        event_id: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value, Duration)> {
        let bytes = body.to_string().into_bytes();
        let ts = chrono::Utc::now().timestamp();
        let signature = lockerhub::signing::sign(&carrier.secret, event_id, ts, &bytes);
        let auth = format!("Bearer {}", carrier.api_key);
        let ts = ts.to_string();
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("webhook-id", event_id),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", signature.as_str()),
        ];
        self.request_timed("POST", "/carrier/v1/events", &headers, &bytes).await
    }

    /// Every item of a paginated admin list, following `next`, bounded in pages and time.
    pub async fn all_pages(
        &self,
        path_and_query: &str,
        max_pages: usize,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<Vec<Value>> {
        let sep = if path_and_query.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..max_pages {
            if tokio::time::Instant::now() >= deadline {
                bail!("GET {path_and_query}: out of time after {} items", items.len());
            }
            let path = match &after {
                Some(a) => format!("{path_and_query}{sep}limit=200&after={a}"),
                None => format!("{path_and_query}{sep}limit=200"),
            };
            let (s, v) = self.get(&path).await?;
            if s != 200 {
                bail!("GET {path}: {s}: {v}");
            }
            if let Some(list) = v["items"].as_array() {
                items.extend(list.iter().cloned());
            }
            match v["next"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => return Ok(items),
            }
        }
        bail!("GET {path_and_query}: more than {max_pages} pages")
    }
}
