//! One actor per device WebSocket: framing, heartbeats, and forwarding to the locker actor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use actix_web_actors::ws;

use super::locker::LockerActor;
use super::messages::{Attach, Detach, DeviceAnswer, DeviceCall, ToDevice};
use crate::clock::Clock;
use crate::protocol::messages::DeviceRequest;
use crate::protocol::{frame_limit, ErrorCode, Fingerprint, Frame, FrameError};

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

pub struct LockerSession {
    id: u64,
    locker_id: String,
    locker: Addr<LockerActor>,
    /// Hash of the credential this session authenticated with.
    credential_hash: String,
    /// The application's clock: silence is measured on it, so tests move it instead of waiting.
    clock: Clock,
    /// When the oldest ping the device has not answered (nor sent anything since) went out.
    /// Silence counts from a ping, not from the last frame, so moving the application's clock
    /// does not make a device that answers its pings look silent.
    unanswered_since: Option<chrono::NaiveDateTime>,
    heartbeat: Duration,
    timeout: Duration,
}

impl LockerSession {
    pub fn new(
        locker_id: String,
        locker: Addr<LockerActor>,
        credential_hash: String,
        heartbeat: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            locker_id,
            locker,
            credential_hash,
            clock: Clock::new(Duration::from_secs(3600)),
            unanswered_since: None,
            heartbeat,
            timeout,
        }
    }

    fn ping(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.unanswered_since.get_or_insert_with(|| self.clock.now());
        ctx.ping(b"");
    }

    /// Measures the device's silence on the application's clock (the wall clock otherwise).
    pub fn on_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Stops the session if a ping has gone unanswered past the timeout; whether it did.
    fn drop_if_silent(&mut self, ctx: &mut ws::WebsocketContext<Self>) -> bool {
        let Some(since) = self.unanswered_since else {
            return false;
        };
        let silent = (self.clock.now() - since).to_std().unwrap_or(Duration::ZERO);
        if silent <= self.timeout {
            return false;
        }
        tracing::info!(locker = %self.locker_id, session = self.id, "device silent; dropping");
        ctx.stop();
        true
    }

    fn error(ctx: &mut ws::WebsocketContext<Self>, id: &str, code: ErrorCode, msg: &str) {
        ctx.text(
            Frame::Error {
                id: id.to_string(),
                error: FrameError::new(code, msg),
            }
            .to_text(),
        );
    }

    /// Deserialize, dispatch, serialize: a malformed frame gets an error frame, never a hang-up.
    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        if !frame_limit::within_limit(text) {
            // As for a frame the WebSocket layer refuses: the stream cannot be trusted to be
            // the device's protocol, so the connection ends (close 1002), not the server.
            tracing::warn!(locker = %self.locker_id, bytes = text.len(), "oversize frame; closing");
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Protocol,
                description: Some(format!(
                    "frame of {} bytes exceeds {} bytes ({} for BootNotification)",
                    text.len(),
                    frame_limit::MAX_FRAME_BYTES,
                    frame_limit::MAX_BOOT_FRAME_BYTES
                )),
            }));
            ctx.stop();
            return;
        }
        let frame = match Frame::parse(text) {
            Ok(f) => f,
            Err(error_frame) => {
                ctx.text(error_frame.to_text());
                return;
            }
        };
        match frame {
            Frame::Call { id, action, payload } => match DeviceRequest::parse(&action, payload.clone()) {
                Err(error) => ctx.text(Frame::Error { id, error }.to_text()),
                Ok(request) => {
                    let call = DeviceCall {
                        session_id: self.id,
                        msg_id: id.clone(),
                        fingerprint: Fingerprint::of(&action, &payload),
                        request,
                    };
                    ctx.spawn(
                        self.locker
                            .send(call)
                            .into_actor(self)
                            .map(move |res, _, ctx| match res {
                                Ok(answer) => ctx.text(answer),
                                Err(_) => Self::error(
                                    ctx,
                                    &id,
                                    ErrorCode::InternalError,
                                    "locker unavailable; retry with the same message id",
                                ),
                            }),
                    );
                }
            },
            Frame::Result { id, payload } => self.locker.do_send(DeviceAnswer {
                msg_id: id,
                answer: Ok(payload),
            }),
            Frame::Error { id, error } => self.locker.do_send(DeviceAnswer {
                msg_id: id,
                answer: Err(error),
            }),
        }
    }
}

impl Actor for LockerSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(locker = %self.locker_id, session = self.id, "device connected");
        self.locker.do_send(Attach {
            session_id: self.id,
            session: ctx.address().recipient(),
            credential_hash: self.credential_hash.clone(),
        });
        self.ping(ctx);
        ctx.run_interval(self.heartbeat, |act, ctx| {
            if !act.drop_if_silent(ctx) {
                act.ping(ctx);
            }
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        tracing::info!(locker = %self.locker_id, session = self.id, "device disconnected");
        self.locker.do_send(Detach { session_id: self.id });
        Running::Stop
    }
}

impl Handler<ToDevice> for LockerSession {
    type Result = ();

    fn handle(&mut self, msg: ToDevice, ctx: &mut Self::Context) {
        match msg {
            ToDevice::Text(t) => ctx.text(t),
            ToDevice::Revoked => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Policy,
                    description: Some("credential revoked or locker deactivated".into()),
                }));
                ctx.stop();
            }
            ToDevice::CheckSilence => {
                self.drop_if_silent(ctx);
            }
            ToDevice::Replaced => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Other(4000),
                    description: Some("replaced by a newer session".into()),
                }));
                ctx.stop();
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for LockerSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.unanswered_since = None;
        match msg {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) => {}
            Ok(ws::Message::Binary(_)) | Ok(ws::Message::Continuation(_)) => {
                Self::error(
                    ctx,
                    "-1",
                    ErrorCode::FormatViolation,
                    "frames are single JSON text frames",
                );
            }
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(ws::Message::Nop) => {}
            Err(e) => {
                // Oversize or invalid WebSocket framing: the stream cannot continue.
                tracing::warn!(locker = %self.locker_id, error = %e, "WebSocket protocol error");
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Protocol,
                    description: Some(e.to_string()),
                }));
                ctx.stop();
            }
        }
    }
}
