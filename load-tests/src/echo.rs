//! The floor: a bare WebSocket echo server built from the same crates as lockerhub
//! (actix-web + actix-web-actors), listening the same way (a std listener, one worker per
//! core), with the same frame limit and subprotocol and a 20 s ping. It answers every call
//! frame `[2, id, action, payload]` with `[3, id, payload]` (parsed with lockerhub's own
//! framing code, so the locker simulator can drive it unchanged) and echoes the body of
//! `POST /carrier/v1/events`. No authentication, no database, no actors behind the session.

use std::process::ExitCode;
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, StreamHandler};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use lockerhub::protocol::{Frame, MAX_FRAME_BYTES};

struct EchoSession;

impl Actor for EchoSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_secs(20), |_, ctx| ctx.ping(b""));
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for EchoSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        match msg {
            Ok(ws::Message::Text(text)) => match Frame::parse(&text) {
                Ok(Frame::Call { id, payload, .. }) => ctx.text(Frame::Result { id, payload }.to_text()),
                Ok(_) => {}
                Err(error_frame) => ctx.text(error_frame.to_text()),
            },
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(_) => {}
            Err(_) => ctx.stop(),
        }
    }
}

async fn session(req: HttpRequest, stream: web::Payload) -> actix_web::Result<HttpResponse> {
    ws::WsResponseBuilder::new(EchoSession, &req, stream)
        .frame_size(MAX_FRAME_BYTES)
        .protocols(&["lockerhub.v1"])
        .start()
}

async fn http_echo(body: web::Bytes) -> HttpResponse {
    HttpResponse::Accepted().content_type("application/json").body(body)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().finish()
}

pub fn serve(port: u16, workers: usize) -> ExitCode {
    let workers = match workers {
        0 => crate::sys::cores(),
        n => n,
    };
    let result = actix_web::rt::System::new().block_on(async move {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        HttpServer::new(|| {
            App::new()
                .route("/ws/v1/lockers/{id}", web::get().to(session))
                .route("/carrier/v1/events", web::post().to(http_echo))
                .route("/healthz", web::get().to(healthz))
        })
        .workers(workers)
        .shutdown_timeout(5)
        .listen(listener)?
        .run()
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo server: {e}");
            ExitCode::FAILURE
        }
    }
}
