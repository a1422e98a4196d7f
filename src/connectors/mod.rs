//! Connectors: how the hub talks to each external system.

pub mod http;
