//! The HTTP edge: what a client may hold open before it has proved who it is.
//!
//! Two bounds keep file descriptors available for lockers and health checks:
//! - every request body must arrive within `request_body_timeout_ms` of the request head, on
//!   every route (a handler that reads its body after authenticating, like the carrier
//!   callbacks, would otherwise wait on a slow sender for ever);
//! - a client address may hold at most `max_unauthenticated_connections_per_ip` connections
//!   that have not yet carried an authenticated request; a connection beyond that is answered
//!   429 at its first request and closed. Lockers, carriers and admins authenticate on their
//!   first request, so only anonymous or slow connections count.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Extensions, Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{web, HttpMessage, HttpRequest, ResponseError};
use futures_util::Stream;

use super::AppState;
use crate::error::AppError;

/// Unauthenticated connections open per client address.
pub struct ConnectionLimits {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionLimits {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// For `HttpServer::on_connect`: counts the new connection against its address and keeps
    /// the slot in the connection's data, so it is released when the connection closes.
    pub fn on_connect(self: &Arc<Self>, conn: &dyn std::any::Any, ext: &mut Extensions) {
        let Some(ip) = conn
            .downcast_ref::<actix_web::rt::net::TcpStream>()
            .and_then(|s| s.peer_addr().ok())
            .map(|a| a.ip())
        else {
            return;
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        let refused = *n >= self.cap;
        if !refused {
            *n += 1;
        }
        drop(open);
        ext.insert(ConnectionSlot {
            ip,
            limits: self.clone(),
            counted: AtomicBool::new(!refused),
            refused,
        });
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }

    /// Unauthenticated connections open from `ip` now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }
}

/// One connection's place in [`ConnectionLimits`]; dropped with the connection.
pub struct ConnectionSlot {
    ip: IpAddr,
    limits: Arc<ConnectionLimits>,
    /// Still counted as unauthenticated.
    counted: AtomicBool,
    /// Over the cap when it was accepted: every request on it is refused.
    refused: bool,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if self.counted.swap(false, Ordering::AcqRel) {
            self.limits.release(self.ip);
        }
    }
}

/// Called once a request has authenticated (admin key, carrier key, device credential): its
/// connection no longer counts against the address's unauthenticated cap.
pub fn authenticated(req: &HttpRequest) {
    if let Some(slot) = req.conn_data::<ConnectionSlot>() {
        if slot.counted.swap(false, Ordering::AcqRel) {
            slot.limits.release(slot.ip);
        }
    }
}

/// App-wide middleware: refuses connections over the per-address cap and bounds the time a
/// request body may take to arrive.
pub async fn guard(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req.conn_data::<ConnectionSlot>().is_some_and(|s| s.refused) {
        let e = AppError::RateLimited(
            "too many unauthenticated connections from this address; close some and retry".into(),
        );
        let mut res = e.error_response();
        res.head_mut().set_connection_type(ConnectionType::Close);
        return Ok(req.into_response(res));
    }
    let timeout = req
        .app_data::<web::Data<AppState>>()
        .map(|s| Duration::from_millis(s.settings.request_body_timeout_ms));
    // A WebSocket's payload is the socket itself, not a body: it must not time out.
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let fired = Arc::new(AtomicBool::new(false));
    if let (Some(timeout), false) = (timeout, upgrade) {
        match req.take_payload() {
            Payload::None => {}
            inner => {
                let deadline = Deadline {
                    inner,
                    sleep: Box::pin(actix_web::rt::time::sleep(timeout)),
                    fired: fired.clone(),
                    timeout,
                };
                req.set_payload(Payload::from(Box::pin(deadline) as actix_http::BoxedPayloadStream));
            }
        }
    }
    let res = next.call(req).await;
    if !fired.load(Ordering::Acquire) {
        return res.map(ServiceResponse::map_into_boxed_body);
    }
    // Whatever the handler made of the cut-off body, the client is told it was too slow,
    // and the connection is closed: its unread rest cannot be trusted.
    let e = AppError::RequestTimeout(format!(
        "the request body did not arrive within {} ms",
        timeout.unwrap_or_default().as_millis()
    ));
    let mut timed_out = e.error_response();
    timed_out.head_mut().set_connection_type(ConnectionType::Close);
    match res {
        Ok(r) => Ok(r.into_response(timed_out)),
        Err(err) => Err(err),
    }
}

/// A request body that fails with `TimedOut` once its deadline passes.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<actix_web::rt::time::Sleep>>,
    fired: Arc<AtomicBool>,
    timeout: Duration,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.fired.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.fired.store(true, Ordering::Release);
            let msg = format!("request body not received within {:?}", self.timeout);
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                msg,
            )))));
        }
        Poll::Pending
    }
}
