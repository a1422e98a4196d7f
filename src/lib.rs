//! tongban (通办): a data-exchange hub for joined-up disability services.
//!
//! Records flow from source connectors through mappings into a durable
//! outbox and on to sink connectors. This crate holds the configuration
//! loader, the Avro schemas, the mapping compiler and the command-line tool.

pub mod admin;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod demo;
pub mod diag;
pub mod dispatch;
pub mod domain;
pub mod formats;
pub mod hub;
pub mod mapping;
pub mod payout;
pub mod pipeline;
pub mod schema;
pub mod sim;
pub mod store;
pub mod synth;
