//! lockerhub: one parcel-locker network for every carrier.

pub mod actors;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod notify;
pub mod offline_list;
pub mod protocol;
pub mod qr_token;
pub mod ratelimit;
pub mod signing;
pub mod simulator;
pub mod startup;
pub mod telemetry;
pub mod workflows;

#[cfg(test)]
mod layering;
