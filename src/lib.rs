//! tongban (通办): a data-exchange hub for joined-up disability services.
//!
//! Records flow from source connectors through mappings into a durable
//! outbox and on to sink connectors; bank payouts go out as payment files
//! and come back as results; operations staff see and steer it all.
//!
//! The modules, lowest layer first; each may use only the layers below it
//! (`tests/layering.rs` holds them to this):
//!
//! | layer | modules | what they are |
//! |---|---|---|
//! | 1 | [`domain`], [`diag`] | ID and certificate numbers, bank cards, masking, dates (docs/domain.md); diagnostics with file, line and column |
//! | 2 | [`schema`], [`store`], [`synth`] | Avro schemas and typed records; the outbox store (SQLite, PostgreSQL) by concern; synthetic people |
//! | 3 | [`formats`], [`mapping`], [`dispatch`] | XML, pain.001/002, bank layouts; the CEL mapping compiler; the dispatcher (claims, retries, breaker) over the store's `Queue` |
//! | 4 | [`config`] | the hub, connector and feed files, validated at load |
//! | 5 | [`pipeline`] | a source record through its feeds into store rows |
//! | 6 | [`connectors`] | transports: HTTP (pull, push, webhooks), Kafka, files |
//! | 7 | [`payout`], [`sim`] | the payout register's handlers; simulators of the five systems |
//! | 8 | [`hub`] | the running hub: plan, start, supervise, stop |
//! | 9 | [`admin`], [`demo`] | the operations API and console; the end-to-end demo |
//! | 10 | [`cli`] | the `tongban` command line: arguments and printing |

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
