//! Building and running the application: tests bind port 0 and run exactly this.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Server, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpMessage, HttpServer};
use tracing_actix_web::{RequestId, TracingLogger};

use crate::actors::hub::Hub;
use crate::actors::messages::OutboxQueued;
use crate::actors::LockerDeps;
use crate::config::Settings;
use crate::db::{self, Db};
use crate::http::{self, AppState};
use crate::ratelimit::{HourlyLimit, RateLimits};

pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
}

impl Application {
    /// Connects to the database (migrating it), starts the actors and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, String> {
        let url = crate::db::DatabaseUrl::parse(&settings.database_location(), settings.db_connect_timeout())?;
        let key = settings.server_key()?;
        // Fail at start, not at the first notification, on bad transport settings.
        crate::notify::channels::Email::from_settings(&settings)?;
        let timeout = settings.db_connect_timeout();
        let pool_size = settings.db_pool_size;
        let url2 = url.clone();
        let writer_config = db::writer::WriterConfig {
            max_batch: settings.write_batch_max,
            queue: settings.write_queue,
            synchronous_full: settings.sqlite_synchronous == crate::config::SqliteSync::Full,
            ..db::writer::WriterConfig::default()
        };
        let db = tokio::task::spawn_blocking(move || -> Result<Db, String> {
            let pool = db::connect_readers(&url2, pool_size, timeout)?;
            let db = Db::new(pool, url2.backend());
            Ok(match url2.backend() {
                db::Backend::Sqlite => db.with_writer(db::writer::Writer::start(&url2, writer_config)?),
                db::Backend::Postgres => db,
            })
        })
        .await
        .map_err(|e| format!("database setup task failed: {e}"))??;
        tracing::info!(database = %url.display(), backend = ?url.backend(), "database ready");
        let listener = listen(&settings.host, settings.port)
            .map_err(|e| format!("cannot listen on {}:{}: {e}", settings.host, settings.port))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let limits = Arc::new(
            RateLimits::new(settings.auth_failures_per_minute).with_remote_opens(settings.remote_open_quota()),
        );
        let clock = settings.clock();
        let settings = Arc::new(settings);
        let directory_lookups = Arc::new(HourlyLimit::new(settings.directory_lookups_per_hour));
        let deps = LockerDeps {
            db: db.clone(),
            key: key.clone(),
            settings: settings.clone(),
            clock: clock.clone(),
            directory_lookups: directory_lookups.clone(),
        };
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let hub = Hub::start_supervised(deps, threads);
        // Whatever queues a webhook or a notification wakes its actor after the commit; their
        // scans (`outbox_poll_ms`) only pick up what a crash left behind.
        let waker = hub.clone();
        db.on_commit(Box::new(move |queued| waker.do_send(OutboxQueued(queued))));
        let state = AppState {
            db,
            settings,
            clock,
            key,
            limits,
            hub,
        };
        let server = run(listener, state.clone(), directory_lookups)?;
        tracing::info!(port, "listening");
        Ok(Self { port, server, state })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A handle to stop the server (gracefully or not) from elsewhere.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Stops the HTTP server at once (no drain) and every locker and carrier actor, as a
    /// crash would: whatever was not yet committed is lost, whatever was is kept.
    pub async fn stop(handle: actix_web::dev::ServerHandle, hub: actix::Addr<Hub>) {
        handle.stop(false).await;
        let _ = hub.send(crate::actors::messages::Shutdown).await;
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Accept-queue length. std's default of 128 overflows when thousands of lockers reconnect at
/// once (each overflow costs the device a one-second SYN retransmit).
const LISTEN_BACKLOG: i32 = 4096;

fn listen(host: &str, port: u16) -> std::io::Result<TcpListener> {
    use std::net::ToSocketAddrs;
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "host resolves to no address"))?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

fn run(listener: TcpListener, state: AppState, directory_lookups: Arc<HourlyLimit>) -> Result<Server, String> {
    let workers = match state.settings.workers {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        n => n,
    };
    let connections = crate::http::edge::ConnectionLimits::new(state.settings.max_unauthenticated_connections_per_ip);
    let limits = state.limits.clone();
    let lookups = directory_lookups;
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limits.prune();
            lookups.prune();
        }
    });
    let server = HttpServer::new(move || {
        // The device WebSocket is outside the request-tracing scope: that middleware wraps a
        // response body in a span for as long as the body streams, which for a WebSocket is
        // the connection's life (a boxed stream and a span per locker, entered on every
        // frame). Sessions log their own start and end, and refused upgrades are logged by
        // the handler.
        let traced = web::scope("")
            .wrap_fn(|req, srv| {
                use actix_web::dev::Service;
                let id = req.extensions().get::<RequestId>().map(|r| r.to_string());
                let fut = srv.call(req);
                async move {
                    let mut res = fut.await?;
                    if let Some(id) = id.and_then(|id| HeaderValue::from_str(&id).ok()) {
                        res.headers_mut()
                            .insert(header::HeaderName::from_static("x-request-id"), id);
                    }
                    Ok(res)
                }
            })
            .wrap(TracingLogger::default())
            .configure(|cfg| http::configure(cfg, &state));
        App::new()
            .wrap(ErrorHandlers::new().default_handler(json_error_body))
            .wrap(actix_web::middleware::from_fn(http::edge::guard))
            .app_data(web::Data::new(state.clone()))
            .service(http::devices::connect)
            .service(traced)
            .default_service(web::to(http::not_found))
    })
    .workers(workers)
    .on_connect(move |conn, ext| connections.on_connect(conn, ext))
    .shutdown_timeout(5)
    .listen(listener)
    .map_err(|e| format!("cannot start HTTP server: {e}"))?
    .run();
    Ok(server)
}

/// Gives framework-generated errors (405, payload errors, …) the same JSON shape as ours.
fn json_error_body<B: MessageBody + 'static>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let code = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        s if s >= 500 => "internal",
        _ => "error",
    };
    let body = serde_json::json!({
        "error": code,
        "message": status.canonical_reason().unwrap_or("error").to_lowercase(),
    })
    .to_string();
    let (req, mut res) = res.into_parts();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let res = res.set_body(BoxBody::new(body));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, res)
            .map_into_right_body::<B>()
            .map_body(|_, b: EitherBody<B, BoxBody>| b),
    ))
}
