//! Connectors: how records come into the hub (sources) and leave it
//! (sinks), one folder per kind of system interface.

pub mod file;
pub mod http;
pub mod intake;
pub mod kafka;
