//! Connectors: how records come into the hub (sources) and leave it
//! (sinks), one folder per kind of system interface.
//!
//! Layer 6: transports only. They use the configuration, the pipeline
//! (intake), the dispatcher's `Sink`, the formats, the schemas and the
//! store; they import no payout or hub code (bank result files go to a
//! handler the hub wires in).

pub mod file;
pub mod http;
pub mod intake;
pub mod kafka;
pub mod settings;
