//! The device protocol (docs/protocol.md), shared by the server and the locker simulator.
//!
//! Frames follow OCPP-J: a call, its result or its error, matched by message id.

pub mod device_error;
pub mod fingerprint;
pub mod frame;
pub mod frame_limit;
pub mod messages;

pub use device_error::DeviceError;
pub use fingerprint::Fingerprint;
pub use frame::{ErrorCode, Frame, FrameError};
pub use frame_limit::{MAX_BOOT_FRAME_BYTES, MAX_FRAME_BYTES};

/// The protocol version this server speaks. A device with another major version is rejected.
pub const PROTOCOL_VERSION: &str = "1.0";
/// The version a device that works offline speaks (docs/protocol.md §15); same major, so a 1.0
/// server would still accept its boot and answer its new calls `NotImplemented`.
pub const PROTOCOL_VERSION_OFFLINE: &str = "1.1";
