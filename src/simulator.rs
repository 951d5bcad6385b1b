//! A simulated locker: boots with a layout, answers `OpenCompartment` by reporting door
//! events, and reconnects. Used by the tests and by load-tests/. It stands for hardware we
//! do not have; it speaks exactly the protocol in docs/protocol.md.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::domain::journal::{JournalEvent, PickupBy, MAX_EVENTS_PER_CALL};
use crate::domain::Size;
use crate::offline_list::EntryKind;
use crate::protocol::messages::*;
use crate::protocol::{Frame, FrameError, PROTOCOL_VERSION, PROTOCOL_VERSION_OFFLINE};

/// How long a simulated call waits for its answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("the server answered with an error: {0:?}")]
    Refused(FrameError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection closed")]
    Closed,
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl SimError {
    /// The protocol error code, if the server refused.
    pub fn code(&self) -> Option<crate::protocol::ErrorCode> {
        match self {
            SimError::Refused(e) => Some(e.code),
            _ => None,
        }
    }
}

/// One simulated compartment.
#[derive(Debug, Clone)]
pub struct SimCompartment {
    pub size: Size,
    pub door_open: bool,
    pub occupied: bool,
}

/// How the simulated hardware behaves.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Speak protocol 1.1 (docs/protocol.md §15): boot with an offline object, accept signed QR
    /// tokens while offline, journal what it does and replay it. Off: a 1.0 device.
    pub offline_capable: bool,
    /// Answer the server's `OpenCompartment` calls (false simulates a device that goes quiet).
    pub answer_open_commands: bool,
    /// Socket read buffer; small for large fleets.
    pub read_buffer: usize,
    /// What the person at a remotely opened door does.
    pub remote_open: RemoteOpenHands,
}

/// What happens at a compartment the server opened remotely, after the door opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RemoteOpenHands {
    /// The door is closed again with whatever was inside still inside.
    #[default]
    CloseUntouched,
    /// The parcel is taken out, then the door is closed.
    TakeParcelOut,
    /// The door is left open; the test closes it with [`SimLocker::close_remote_door`].
    LeaveOpen,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            offline_capable: false,
            answer_open_commands: true,
            read_buffer: 4 * 1024,
            remote_open: RemoteOpenHands::default(),
        }
    }
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Value, FrameError>>>>>;

/// Where the simulated device reads its clock; real time unless a test sets one.
pub type DeviceClock = Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>;

/// A 1.1 device's offline side: what its boot gave it, its journal and its spent tokens.
/// Kept across reconnects, as a real locker keeps it in storage.
#[derive(Default)]
pub struct OfflineSide {
    pub qr_keys: Vec<crate::qr_token::PublicKey>,
    pub skew_secs: i64,
    /// The number the next journaled event gets.
    pub next_seq: i64,
    /// Events the server has not confirmed, oldest first.
    pub journal: Vec<JournalEvent>,
    /// Spent token ids, with their expiry (Unix seconds): kept until then.
    pub spent: HashMap<String, i64>,
    clock: Option<DeviceClock>,
    /// The local code list: its key (from boot), version, salt, cost and entries.
    pub list_key: Option<[u8; 32]>,
    pub list_version: Option<i64>,
    pub list_salt: String,
    pub list_kdf: Option<crate::offline_list::Kdf>,
    pub list: BTreeMap<String, ListEntry>,
    /// The wrong-code allowance (from boot) and what is left of it, kept across reboots.
    pub guessing: Option<crate::domain::lockout::Policy>,
    /// Per kind of code (`pickup`, `collection`, `courier`), as the server counts them.
    pub guesses: BTreeMap<&'static str, crate::domain::lockout::GuessState>,
    /// The courier identified at the kiosk offline: H(courier code), the factor of their
    /// collection and deposit entries, with the courier entry that matched and when.
    pub courier: Option<OfflineCourier>,
    /// How long a kiosk interaction lasts without activity (from boot).
    pub interaction_secs: i64,
}

/// A driver identified at the kiosk while offline. The identification ends, as online, when the
/// interaction times out, at a boot, or when the list no longer carries its courier entry.
#[derive(Debug, Clone)]
pub struct OfflineCourier {
    pub hash: String,
    pub entry: String,
    pub last_activity: chrono::DateTime<chrono::Utc>,
}

impl OfflineSide {
    /// The live entry of `kind` that `code` and `factor` open: only the entries with the tag
    /// of what the kind tags are run through the slow hash (docs/protocol.md §15.8).
    fn find_entry(
        &self,
        key: &[u8; 32],
        kdf: &crate::offline_list::Kdf,
        kind: EntryKind,
        code: &str,
        factor: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<ListEntry> {
        let tag = crate::offline_list::tag(key, kind.as_str(), kind.tagged(code, factor));
        self.list
            .values()
            .filter(|e| {
                e.kind == kind.as_str() && e.tag == tag && e.expires_at.timestamp() + self.skew_secs >= now.timestamp()
            })
            .find(|e| crate::offline_list::check(key, kdf, &self.list_salt, &e.entry, code, factor, &e.verifier))
            .cloned()
    }
}

/// Why the simulated kiosk refused a QR token while offline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfflineRefusal {
    #[error("this device does not work offline (protocol 1.0)")]
    NotOfflineCapable,
    #[error("invalid QR code: {0}")]
    Invalid(#[from] crate::qr_token::QrError),
    #[error("the compartment is empty or unknown")]
    Empty,
    #[error("this QR code was already used")]
    Spent,
    #[error("no local code list yet")]
    NoList,
    #[error("wrong code")]
    WrongCode,
    #[error("too many wrong codes; try again in {0} s")]
    LockedOut(i64),
    #[error("identify with your courier code first")]
    CourierFirst,
    #[error("no reservation for this parcel here")]
    NoReservation,
    #[error("the reserved compartment is not empty")]
    NotEmpty,
}

/// A connected simulated locker. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SimLocker {
    pub locker_id: String,
    credential: String,
    url: String,
    pub compartments: Arc<Mutex<BTreeMap<i32, SimCompartment>>>,
    behaviour: Behaviour,
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    /// Message ids are `<random prefix>-<counter>`, unique across reconnects and restarts.
    id_prefix: String,
    /// Server calls received (action, payload), for tests to inspect.
    pub server_calls: Arc<Mutex<Vec<(String, Value)>>>,
    closed: Arc<tokio::sync::Notify>,
    /// The 1.1 device's offline side (unused by a 1.0 device).
    pub offline: Arc<Mutex<OfflineSide>>,
    /// Set when the connection is gone (its reader ended, or a write failed), before the
    /// waiting calls are failed: a call registered after that sees it and fails at once
    /// instead of waiting out its timeout.
    dead: Arc<std::sync::atomic::AtomicBool>,
}

impl SimLocker {
    /// Connects to `ws_base` (e.g. `ws://127.0.0.1:8080`) as `locker_id`.
    pub async fn connect(
        ws_base: &str,
        locker_id: &str,
        credential: &str,
        layout: &[(i32, Size)],
    ) -> Result<SimLocker, SimError> {
        Self::connect_with(ws_base, locker_id, credential, layout, Behaviour::default(), None).await
    }

    /// Connects with explicit behaviour and, optionally, a local source address.
    pub async fn connect_with(
        ws_base: &str,
        locker_id: &str,
        credential: &str,
        layout: &[(i32, Size)],
        behaviour: Behaviour,
        source: Option<std::net::IpAddr>,
    ) -> Result<SimLocker, SimError> {
        let compartments = layout
            .iter()
            .map(|(n, size)| {
                (
                    *n,
                    SimCompartment {
                        size: *size,
                        door_open: false,
                        occupied: false,
                    },
                )
            })
            .collect();
        let url = format!("{}/ws/v1/lockers/{}", ws_base.trim_end_matches('/'), locker_id);
        let (out, rx) = mpsc::unbounded_channel();
        let sim = SimLocker {
            locker_id: locker_id.to_string(),
            credential: credential.to_string(),
            url,
            compartments: Arc::new(Mutex::new(compartments)),
            behaviour,
            out,
            pending: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            id_prefix: crate::credentials::generate_token("")[..10].to_string(),
            server_calls: Arc::default(),
            offline: Arc::new(Mutex::new(OfflineSide {
                next_seq: 1,
                ..OfflineSide::default()
            })),
            closed: Arc::new(tokio::sync::Notify::new()),
            dead: Arc::default(),
        };
        sim.open_socket(rx, source).await?;
        Ok(sim)
    }

    async fn open_socket(
        &self,
        mut rx: mpsc::UnboundedReceiver<Message>,
        source: Option<std::net::IpAddr>,
    ) -> Result<(), SimError> {
        let mut req = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| SimError::Connect(e.to_string()))?;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.locker_id, self.credential));
        req.headers_mut()
            .insert("Authorization", format!("Basic {basic}").parse().expect("header value"));
        let cfg = WebSocketConfig::default()
            .read_buffer_size(self.behaviour.read_buffer)
            .write_buffer_size(0)
            .max_message_size(Some(1 << 20));
        let host_port = self
            .url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let addr: std::net::SocketAddr = host_port
            .parse()
            .map_err(|e| SimError::Connect(format!("{host_port}: {e}")))?;
        let socket = match (source, addr) {
            (Some(ip), std::net::SocketAddr::V4(_)) => {
                let s = tokio::net::TcpSocket::new_v4().map_err(|e| SimError::Connect(e.to_string()))?;
                s.bind(std::net::SocketAddr::new(ip, 0))
                    .map_err(|e| SimError::Connect(e.to_string()))?;
                s
            }
            (_, std::net::SocketAddr::V4(_)) => {
                tokio::net::TcpSocket::new_v4().map_err(|e| SimError::Connect(e.to_string()))?
            }
            (_, std::net::SocketAddr::V6(_)) => {
                tokio::net::TcpSocket::new_v6().map_err(|e| SimError::Connect(e.to_string()))?
            }
        };
        let tcp = socket
            .connect(addr)
            .await
            .map_err(|e| SimError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let (ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(cfg))
            .await
            .map_err(|e| SimError::Connect(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let writer = self.clone();
        tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    m = rx.recv() => match m { Some(m) => m, None => break },
                    () = writer.gone() => break,
                };
                let close = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() {
                    // A connection that cannot be written to carries no more calls. The reader
                    // is not always told: after the server was killed, a reader was seen
                    // waiting on a dead socket for good, and with it every waiting call.
                    writer.connection_gone();
                    break;
                }
                if close {
                    // The reader ends when the server answers the close (the handshake).
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = stream.next() => match m { Some(Ok(m)) => m, _ => break },
                    () = me.gone() => break,
                };
                match msg {
                    Message::Text(t) => me.on_frame(t.as_str()),
                    Message::Ping(p) => {
                        let _ = me.out.send(Message::Pong(p));
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            me.connection_gone();
        });
        Ok(())
    }

    /// Resolves once the connection is gone (see `connection_gone`), at once if it already is.
    /// Armed before the check: a `notify_waiters` while the caller was busy elsewhere (it
    /// stores no permit) is not lost, it shows as `dead`.
    async fn gone(&self) {
        let notified = self.closed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.dead.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }

    /// Fails whatever call is still waiting, and whatever registers from now on; wakes
    /// `wait_closed` and the other half of the connection. Called when the reader ends, or
    /// when the writer cannot write.
    fn connection_gone(&self) {
        self.dead.store(true, Ordering::SeqCst);
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.closed.notify_waiters();
    }

    fn on_frame(&self, text: &str) {
        match Frame::parse(text) {
            Ok(Frame::Result { id, payload }) => self.resolve(&id, Ok(payload)),
            Ok(Frame::Error { id, error }) => self.resolve(&id, Err(error)),
            Ok(Frame::Call { id, action, payload }) => self.on_server_call(id, action, payload),
            Err(_) => {}
        }
    }

    fn resolve(&self, id: &str, answer: Result<Value, FrameError>) {
        if let Some(tx) = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(id) {
            let _ = tx.send(answer);
        }
    }

    /// Hardware behaviour for server calls: open the door, confirm, report the door events.
    fn on_server_call(&self, id: String, action: String, payload: Value) {
        self.server_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((action.clone(), payload.clone()));
        if action == "SendLocalList" && self.behaviour.offline_capable {
            let answer = self.take_list(payload);
            let _ = self
                .out
                .send(Message::text(Frame::Result { id, payload: answer }.to_text()));
            return;
        }
        if action != "OpenCompartment" || !self.behaviour.answer_open_commands {
            return;
        }
        let number = payload.get("compartment").and_then(Value::as_i64).unwrap_or(-1) as i32;
        let exists = self
            .compartments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&number);
        let status = if exists { "Opened" } else { "Failed" };
        let _ = self.out.send(Message::text(
            Frame::Result {
                id,
                payload: json!({"status": status}),
            }
            .to_text(),
        ));
        if exists {
            let me = self.clone();
            let hands = self.behaviour.remote_open;
            tokio::spawn(async move {
                let _ = me.door(number, DoorChange::Opened).await;
                match hands {
                    RemoteOpenHands::CloseUntouched => {}
                    RemoteOpenHands::TakeParcelOut => me.set_occupied(number, false),
                    RemoteOpenHands::LeaveOpen => return,
                }
                let _ = me.door(number, DoorChange::Closed).await;
            });
        }
    }

    /// Sends a raw frame (for malformed-input tests) and waits for the answer carrying `reply_id`.
    pub async fn send_raw(&self, msg: Message, reply_id: &str) -> Result<Value, SimError> {
        self.exchange(reply_id, msg).await
    }

    /// Registers the answer awaited under `id`, sends `msg`, and waits (bounded) for the
    /// answer. A connection already gone fails the call at once, whichever way it went: the
    /// registration happens before the check, and `connection_gone` marks the connection dead
    /// before it fails what is registered.
    async fn exchange(&self, id: &str, msg: Message) -> Result<Value, SimError> {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), tx);
        if self.dead.load(Ordering::SeqCst) {
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
            return Err(SimError::Closed);
        }
        self.out.send(msg).map_err(|_| SimError::Closed)?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(SimError::Refused(e)),
            Ok(Err(_)) => Err(SimError::Closed),
            Err(_) => {
                self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
                Err(SimError::Timeout(CALL_TIMEOUT))
            }
        }
    }

    /// Whether the connection is gone (its reader ended, or its writer did), now.
    pub fn is_closed(&self) -> bool {
        self.dead.load(Ordering::SeqCst) || self.out.is_closed()
    }

    /// Whether the connection has been closed (by either side).
    pub async fn wait_closed(&self, within: Duration) -> bool {
        // A writer that sent its close and ended shows only as a closed channel.
        if self.out.is_closed() {
            return true;
        }
        tokio::time::timeout(within, self.gone()).await.is_ok()
    }

    /// Sends a call with a fresh message id and waits for its answer.
    pub async fn call(&self, action: &str, payload: Value) -> Result<Value, SimError> {
        let id = format!("{}-{}", self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed));
        self.call_with_id(&id, action, payload).await
    }

    /// Sends a call with a given message id (a retry reuses the id) and waits for its answer.
    pub async fn call_with_id(&self, id: &str, action: &str, payload: Value) -> Result<Value, SimError> {
        let frame = Frame::Call {
            id: id.to_string(),
            action: action.to_string(),
            payload,
        }
        .to_text();
        self.exchange(id, Message::text(frame)).await
    }

    /// The snapshot the hardware would report now.
    pub fn snapshot(&self) -> Vec<CompartmentSnapshot> {
        self.compartments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, c)| CompartmentSnapshot {
                number: *n,
                door: if c.door_open { Door::Open } else { Door::Closed },
                occupied: c.occupied,
            })
            .collect()
    }

    pub async fn boot(&self) -> Result<BootResponse, SimError> {
        let offline = self.behaviour.offline_capable.then(|| {
            let side = self.side();
            OfflineBoot {
                journal: JournalState {
                    next_seq: side.next_seq,
                    pending: side.journal.len() as i64,
                },
                clock: self.device_now_with(&side),
                local_list_version: side.list_version,
            }
        });
        let payload = json!(BootNotification {
            firmware_version: "sim-1.0".into(),
            protocol_version: if offline.is_some() {
                PROTOCOL_VERSION_OFFLINE
            } else {
                PROTOCOL_VERSION
            }
            .into(),
            compartments: self.snapshot(),
            offline,
        });
        let v = self.call("BootNotification", payload).await?;
        let resp: BootResponse = serde_json::from_value(v).map_err(|e| SimError::Unexpected(e.to_string()))?;
        if let Some(o) = &resp.offline {
            let mut side = self.side();
            side.courier = None;
            side.interaction_secs = i64::try_from(resp.config.kiosk_interaction_timeout_secs).unwrap_or(i64::MAX);
            side.qr_keys = o.qr_keys.clone();
            side.skew_secs = o.allowed_skew_secs;
            side.guessing = Some(o.guessing.into());
            let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&o.local_list.list_key)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok());
            if key != side.list_key {
                // A new key (another epoch): the old list opens nothing; a full one follows.
                side.list.clear();
                side.list_version = None;
            }
            side.list_key = key;
            let applied = o.journal.applied_through;
            side.journal.retain(|e| e.seq > applied);
            // A device whose journal is behind the server's (restored storage) never reuses a
            // number the server has applied.
            side.next_seq = side.next_seq.max(applied + 1);
        }
        Ok(resp)
    }

    fn side(&self) -> std::sync::MutexGuard<'_, OfflineSide> {
        self.offline.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn device_now_with(&self, side: &OfflineSide) -> chrono::DateTime<chrono::Utc> {
        side.clock.as_ref().map_or_else(chrono::Utc::now, |c| c())
    }

    /// Sets where the device reads its clock (a test's clock, perhaps skewed).
    pub fn set_clock(&self, clock: DeviceClock) {
        self.side().clock = Some(clock);
    }

    /// The journal events the server has not confirmed.
    pub fn journal(&self) -> Vec<JournalEvent> {
        self.side().journal.clone()
    }

    /// The kiosk while offline (1.1): a recipient scans a signed QR token. The device checks
    /// it with no server (signature, locker, expiry with the skew allowance, compartment
    /// occupied, not spent), opens the door, the parcel is taken out, the door closes, and the
    /// pickup is journaled. Returns the compartment.
    pub fn pickup_offline_qr(&self, token: &str) -> Result<i32, OfflineRefusal> {
        if !self.behaviour.offline_capable {
            return Err(OfflineRefusal::NotOfflineCapable);
        }
        let mut side = self.side();
        let now = self.device_now_with(&side);
        let claims = crate::qr_token::check(token, &side.qr_keys, &self.locker_id, now.timestamp(), side.skew_secs)?;
        let keep_until = now.timestamp() - side.skew_secs;
        side.spent.retain(|_, exp| *exp >= keep_until);
        if side.spent.contains_key(&claims.j) {
            return Err(OfflineRefusal::Spent);
        }
        {
            let mut map = self.compartments.lock().unwrap_or_else(|e| e.into_inner());
            let c = map
                .get_mut(&claims.c)
                .filter(|c| c.occupied)
                .ok_or(OfflineRefusal::Empty)?;
            // The door opens, the parcel leaves, the door closes: the token is spent.
            c.occupied = false;
            c.door_open = false;
        }
        side.spent.insert(claims.j.clone(), claims.exp);
        self.journal_event(
            &mut side,
            now,
            "pickup",
            Some(claims.c),
            Some(PickupBy::QrToken(token.to_string())),
        );
        Ok(claims.c)
    }

    /// Applies a `SendLocalList`: a full list replaces the one held; a differential one applies
    /// only on the version it was made from (else `VersionMismatch`, and the server sends all).
    fn take_list(&self, payload: Value) -> Value {
        let Ok(u) = serde_json::from_value::<SendLocalList>(payload) else {
            return json!({"status": "Failed"});
        };
        let mut side = self.side();
        match (u.update.as_str(), u.base_version) {
            ("full", _) => side.list.clear(),
            ("differential", Some(base)) if side.list_version == Some(base) => {
                for id in &u.remove {
                    side.list.remove(id);
                }
            }
            ("differential", _) => return json!({"status": "VersionMismatch", "version": side.list_version}),
            _ => return json!({"status": "Failed"}),
        }
        for e in u.upsert {
            side.list.insert(e.entry.clone(), e);
        }
        side.list_version = Some(u.version);
        side.list_salt = u.list_salt;
        side.list_kdf = Some(u.kdf);
        json!({"status": "Accepted", "version": u.version})
    }

    /// The kiosk while offline (1.1): a recipient types a pickup code and second factor. The
    /// device applies the wrong-code allowance, selects the entries by the factor's tag, runs
    /// the slow hash for those only, and on a match opens the compartment (the parcel is taken
    /// out and the door closes) and journals the pickup; a miss is journaled as a wrong code.
    pub fn pickup_offline_code(&self, code: &str, factor: &str) -> Result<i32, OfflineRefusal> {
        let factor = crate::domain::second_factor::normalise(factor);
        self.take_out_offline(EntryKind::Pickup, code.trim(), &factor)
    }

    /// The kiosk while offline (1.1): a driver identifies with their courier code, checked
    /// against the list's courier entries (counted like online, as `courier` wrong codes). The
    /// kiosk then accepts their collection codes and pre-advised deposits.
    pub fn identify_courier_offline(&self, code: &str) -> Result<(), OfflineRefusal> {
        let h = crate::offline_list::courier_hash(code);
        let entry = self.guarded(EntryKind::Courier, |side, key, kdf, now| {
            side.find_entry(key, kdf, EntryKind::Courier, &h, "", now)
        })?;
        let mut side = self.side();
        let now = self.device_now_with(&side);
        side.courier = Some(OfflineCourier {
            hash: h,
            entry: entry.entry,
            last_activity: now,
        });
        Ok(())
    }

    /// The identified driver's courier hash, if the identification still holds (and, as any
    /// activity, it keeps the interaction alive).
    fn identified_courier(&self) -> Result<String, OfflineRefusal> {
        let mut side = self.side();
        let now = self.device_now_with(&side);
        let timeout = chrono::Duration::seconds(side.interaction_secs.min(86_400 * 365));
        let live = side.courier.as_ref().filter(|c| {
            now - c.last_activity <= timeout
                && side
                    .list
                    .get(&c.entry)
                    .is_some_and(|e| e.expires_at.timestamp() + side.skew_secs >= now.timestamp())
        });
        let Some(hash) = live.map(|c| c.hash.clone()) else {
            side.courier = None;
            return Err(OfflineRefusal::CourierFirst);
        };
        if let Some(c) = side.courier.as_mut() {
            c.last_activity = now;
        }
        Ok(hash)
    }

    /// The kiosk while offline (1.1): the identified driver types a collection code; a match
    /// opens the expired parcel's compartment, the parcel is taken out, and the collection is
    /// journaled. A miss counts as a wrong `collection` code.
    pub fn collect_offline(&self, code: &str) -> Result<i32, OfflineRefusal> {
        let h = self.identified_courier()?;
        self.take_out_offline(EntryKind::Collection, code.trim(), &h)
    }

    /// The kiosk while offline (1.1): the identified driver scans a pre-advised parcel's
    /// tracking number; its reserved compartment opens, the parcel goes in, the door closes, and
    /// the deposit is journaled. The locker issues no code: the server does when it hears.
    pub fn deposit_offline(&self, tracking_number: &str) -> Result<i32, OfflineRefusal> {
        if !self.behaviour.offline_capable {
            return Err(OfflineRefusal::NotOfflineCapable);
        }
        let h = self.identified_courier()?;
        let mut side = self.side();
        let (Some(key), Some(kdf)) = (side.list_key, side.list_kdf) else {
            return Err(OfflineRefusal::NoList);
        };
        let tn =
            crate::domain::inputs::TrackingNumber::parse(tracking_number).map_err(|_| OfflineRefusal::NoReservation)?;
        let now = self.device_now_with(&side);
        // Not a guess: a tracking number is printed on the parcel (online, an unknown one is
        // `NotFound`, not counted).
        let entry = side
            .find_entry(&key, &kdf, EntryKind::Deposit, tn.as_str(), &h, now)
            .ok_or(OfflineRefusal::NoReservation)?;
        let number = entry.compartment.ok_or(OfflineRefusal::NoReservation)?;
        {
            let mut map = self.compartments.lock().unwrap_or_else(|e| e.into_inner());
            let c = map
                .get_mut(&number)
                .filter(|c| !c.occupied)
                .ok_or(OfflineRefusal::NotEmpty)?;
            c.occupied = true;
            c.door_open = false;
        }
        side.list.remove(&entry.entry);
        self.journal_event(
            &mut side,
            now,
            "deposit",
            Some(number),
            Some(PickupBy::Entry(entry.entry)),
        );
        Ok(number)
    }

    /// A code that empties a compartment offline (pickup, collection): found under the
    /// allowance of its kind, the parcel taken out, the event journaled, the entry dropped.
    fn take_out_offline(&self, kind: EntryKind, code: &str, factor: &str) -> Result<i32, OfflineRefusal> {
        let entry = self.guarded(kind, |side, key, kdf, now| {
            side.find_entry(key, kdf, kind, code, factor, now)
        })?;
        let number = entry.compartment.ok_or(OfflineRefusal::Empty)?;
        let mut side = self.side();
        {
            let mut map = self.compartments.lock().unwrap_or_else(|e| e.into_inner());
            let c = map
                .get_mut(&number)
                .filter(|c| c.occupied)
                .ok_or(OfflineRefusal::Empty)?;
            c.occupied = false;
            c.door_open = false;
        }
        side.list.remove(&entry.entry);
        let now = self.device_now_with(&side);
        self.journal_event(
            &mut side,
            now,
            kind.as_str(),
            Some(number),
            Some(PickupBy::Entry(entry.entry)),
        );
        Ok(number)
    }

    /// Runs `find` under the wrong-code allowance of `kind`, as the server would: refused
    /// unchecked during a lockout; a miss is journaled as a wrong code of that kind and counted.
    fn guarded(
        &self,
        kind: EntryKind,
        find: impl FnOnce(
            &OfflineSide,
            &[u8; 32],
            &crate::offline_list::Kdf,
            chrono::DateTime<chrono::Utc>,
        ) -> Option<ListEntry>,
    ) -> Result<ListEntry, OfflineRefusal> {
        if !self.behaviour.offline_capable {
            return Err(OfflineRefusal::NotOfflineCapable);
        }
        let mut side = self.side();
        let (Some(key), Some(kdf), Some(policy)) = (side.list_key, side.list_kdf, side.guessing) else {
            return Err(OfflineRefusal::NoList);
        };
        let now = self.device_now_with(&side);
        let at = now.naive_utc();
        let kind_name = kind.as_str();
        let mut guesses = side
            .guesses
            .get(kind_name)
            .cloned()
            .unwrap_or_else(|| crate::domain::lockout::GuessState::fresh(at));
        if let Some(left) = guesses.locked(at) {
            return Err(OfflineRefusal::LockedOut(left.num_seconds().max(1)));
        }
        if let Some(found) = find(&side, &key, &kdf, now) {
            return Ok(found);
        }
        let started = guesses.fail(&policy, at);
        side.guesses.insert(kind_name, guesses);
        let code_kind = (kind != EntryKind::Pickup).then(|| kind_name.to_string());
        self.journal_event_of(&mut side, now, "wrong_code", None, None, code_kind);
        Err(match started {
            Some(l) => OfflineRefusal::LockedOut(l.length.num_seconds().max(1)),
            None => OfflineRefusal::WrongCode,
        })
    }

    fn journal_event(
        &self,
        side: &mut OfflineSide,
        at: chrono::DateTime<chrono::Utc>,
        kind: &str,
        compartment: Option<i32>,
        by: Option<PickupBy>,
    ) {
        self.journal_event_of(side, at, kind, compartment, by, None)
    }

    fn journal_event_of(
        &self,
        side: &mut OfflineSide,
        at: chrono::DateTime<chrono::Utc>,
        kind: &str,
        compartment: Option<i32>,
        by: Option<PickupBy>,
        code_kind: Option<String>,
    ) {
        let seq = side.next_seq;
        side.next_seq += 1;
        side.journal.push(JournalEvent {
            seq,
            at,
            kind: kind.into(),
            compartment,
            by,
            code_kind,
        });
    }

    /// Replays the journal after a boot (1.1), in calls that fit the frame limit, from where the
    /// server says it is; returns every result. Bounded: at most one call per event, plus one
    /// resend after a `JournalGap`.
    pub async fn replay_journal(&self) -> Result<Vec<Value>, SimError> {
        let mut results = Vec::new();
        let mut gaps = 0;
        for _ in 0..=self.journal().len() + 1 {
            let batch = journal_batch(&self.journal());
            if batch.is_empty() {
                return Ok(results);
            }
            match self.call("ReplayJournal", json!({"events": batch})).await {
                Ok(v) => {
                    let applied = v["applied_through"].as_i64().unwrap_or(0);
                    self.side().journal.retain(|e| e.seq > applied);
                    results.extend(v["results"].as_array().cloned().unwrap_or_default());
                }
                Err(SimError::Refused(e)) if e.code == crate::protocol::ErrorCode::JournalGap && gaps == 0 => {
                    gaps += 1;
                    let expected = e.details["expected_seq"].as_i64().unwrap_or(0);
                    self.side().journal.retain(|ev| ev.seq >= expected);
                }
                Err(e) => return Err(e),
            }
        }
        Err(SimError::Unexpected("the journal did not drain".into()))
    }

    /// Reports a door change, updating the simulated state first.
    pub async fn door(&self, number: i32, change: DoorChange) -> Result<String, SimError> {
        let occupied = {
            let mut map = self.compartments.lock().unwrap_or_else(|e| e.into_inner());
            let c = map
                .get_mut(&number)
                .ok_or_else(|| SimError::Unexpected(format!("no compartment {number}")))?;
            c.door_open = change == DoorChange::Opened;
            c.occupied
        };
        let v = self
            .call(
                "DoorEvent",
                json!(DoorEvent {
                    compartment: number,
                    door: change,
                    // As docs/protocol.md §7.9 shows it: the sensor reading goes with `closed` only.
                    occupied: (change == DoorChange::Closed).then_some(occupied),
                }),
            )
            .await?;
        Ok(v.get("outcome").and_then(Value::as_str).unwrap_or_default().to_string())
    }

    /// Reports the door's truth (1.1): `forced` (it opened without a command) or `blocked`
    /// (unlocked, it did not open). The simulated door stays closed.
    pub async fn door_alarm(&self, number: i32, kind: AlarmKind) -> Result<Value, SimError> {
        let at = {
            let side = self.side();
            self.device_now_with(&side)
        };
        self.call(
            "DoorAlarm",
            json!(DoorAlarm {
                compartment: number,
                kind,
                at: Some(at),
            }),
        )
        .await
    }

    /// Closes a door the server opened remotely (see [`RemoteOpenHands::LeaveOpen`]), taking
    /// the parcel out first or not. Waits (bounded) for the door to have opened. Returns the
    /// closing `DoorEvent`'s outcome.
    pub async fn close_remote_door(&self, number: i32, take_parcel_out: bool) -> Result<String, SimError> {
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        loop {
            let open = self
                .compartments
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&number)
                .is_some_and(|c| c.door_open);
            if open {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(SimError::Timeout(CALL_TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if take_parcel_out {
            self.set_occupied(number, false);
        }
        self.door(number, DoorChange::Closed).await
    }

    fn set_occupied(&self, number: i32, occupied: bool) {
        if let Some(c) = self
            .compartments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&number)
        {
            c.occupied = occupied;
        }
    }

    /// Starts a deposit and returns the server's "open compartment N".
    pub async fn start_deposit(
        &self,
        carrier_id: &str,
        identify: Identify,
        size: Size,
        tracking_number: Option<&str>,
    ) -> Result<DepositOpen, SimError> {
        let req = StartDeposit {
            carrier_id: carrier_id.into(),
            identify,
            size,
            tracking_number: tracking_number.map(str::to_string),
        };
        let v = self.call("StartDeposit", json!(req)).await?;
        serde_json::from_value(v).map_err(|e| SimError::Unexpected(e.to_string()))
    }

    /// The driver's hands: open the door, put the parcel in, close it. Returns the outcome.
    pub async fn put_parcel(&self, number: i32) -> Result<String, SimError> {
        self.door(number, DoorChange::Opened).await?;
        self.set_occupied(number, true);
        self.door(number, DoorChange::Closed).await
    }

    /// A whole deposit: start, open, put, close.
    pub async fn deposit(
        &self,
        carrier_id: &str,
        identify: Identify,
        size: Size,
        tracking_number: Option<&str>,
    ) -> Result<DepositOpen, SimError> {
        let open = self.start_deposit(carrier_id, identify, size, tracking_number).await?;
        let outcome = self.put_parcel(open.compartment).await?;
        if outcome != "deposited" {
            return Err(SimError::Unexpected(format!("door close outcome {outcome}")));
        }
        Ok(open)
    }

    /// A whole pickup: present the code or QR token, open, take the parcel, close.
    pub async fn pickup(&self, by: Pickup) -> Result<PickupOpen, SimError> {
        self.pickup_payload(json!(by)).await
    }

    /// A whole keypad pickup with the recipient's second factor (protocol 1.0.1).
    pub async fn pickup_with_factor(&self, code: &str, second_factor: &str) -> Result<PickupOpen, SimError> {
        self.pickup_payload(json!({"code": code, "second_factor": second_factor}))
            .await
    }

    async fn pickup_payload(&self, payload: serde_json::Value) -> Result<PickupOpen, SimError> {
        let v = self.call("Pickup", payload).await?;
        let open: PickupOpen = serde_json::from_value(v).map_err(|e| SimError::Unexpected(e.to_string()))?;
        self.door(open.compartment, DoorChange::Opened).await?;
        self.set_occupied(open.compartment, false);
        let outcome = self.door(open.compartment, DoorChange::Closed).await?;
        if outcome != "picked_up" {
            return Err(SimError::Unexpected(format!("door close outcome {outcome}")));
        }
        Ok(open)
    }

    /// Drops the connection (as a network failure would) and waits until it is gone.
    pub async fn disconnect(&self) {
        if self.out.is_closed() || self.dead.load(Ordering::SeqCst) {
            // Already gone (the server dropped it, or died): nothing will notify.
            return;
        }
        let closed = self.closed.notified();
        let _ = self.out.send(Message::Close(None));
        let _ = tokio::time::timeout(Duration::from_secs(5), closed).await;
    }

    /// Reconnects with the same identity and hardware state; boot again afterwards.
    pub async fn reconnect(&self) -> Result<SimLocker, SimError> {
        self.disconnect().await;
        let (out, rx) = mpsc::unbounded_channel();
        let sim = SimLocker {
            out,
            pending: Arc::default(),
            closed: Arc::new(tokio::sync::Notify::new()),
            dead: Arc::default(),
            ..self.clone()
        };
        sim.open_socket(rx, None).await?;
        Ok(sim)
    }

    /// Changes what the hardware senses, without telling the server (for reconciliation tests).
    pub fn tamper(&self, number: i32, door_open: bool, occupied: bool) {
        if let Some(c) = self
            .compartments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&number)
        {
            c.door_open = door_open;
            c.occupied = occupied;
        }
    }
}

/// The oldest events that fit one `ReplayJournal` call: at most [`MAX_EVENTS_PER_CALL`], and
/// within the frame limit with room for the frame's head.
fn journal_batch(journal: &[JournalEvent]) -> Vec<JournalEvent> {
    let room = crate::protocol::MAX_FRAME_BYTES - 512;
    let mut size = 0;
    journal
        .iter()
        .take(MAX_EVENTS_PER_CALL)
        .take_while(|e| {
            size += serde_json::to_string(e).map_or(room, |t| t.len() + 1);
            size <= room
        })
        .cloned()
        .collect()
}
