//! Bank payouts: payment instructions (from the two-subsidies system's
//! monthly payout list, mapped by a feed) are recorded once each in the
//! payout register, grouped into batches per bank and period, and delivered
//! to the bank as ISO 20022 pain.001 files (or in the bank's layout) with a
//! checksum, through the outbox like every other delivery.
//!
//! - [`PaymentsSink`] is the sink of the payment target: delivering an
//!   instruction records it in the register (idempotent by payment id).
//! - [`build`] (`tongban payouts build --period YYYY-MM`) makes batches of
//!   every payment of the period that is in no live batch, and puts one
//!   outbox message per batch (its id only) on the files target
//!   (`<connector.operation>/files`, ordered per bank). The store's unique
//!   index keeps a payment out of a second live batch.
//! - [`FilesSink`] delivers those messages: it renders the batch from the
//!   register at delivery time (its content and `CreDtTm` are stored, so
//!   every rendering is byte-identical), refuses to send a file that would
//!   differ from one sent before, and drops it into the bank's directory
//!   (atomically, checksum file last) or uploads it over HTTP. Retries,
//!   dead letters, pauses and replays are the outbox's.
//! - [`HoldsSink`] delivers holds (`PayoutHold`, a death registered by
//!   the registries): the person's payments from a month on go into no
//!   batch, and those already in a file raise a `paid_after_stop` alarm.
//! - [`Reconciler`] reads the bank's result files (pain.002 or layout) for
//!   a file source and [`reconcile`]s them against the register.
//!
//! Files: `payments.rs`, `holds.rs`, `build.rs`, `render.rs`, `files.rs`,
//! `reconcile.rs`; this file holds the bank targets. Payouts use the
//! store, the dispatcher's `Sink`, the file connector's placement and
//! checksums and the payment formats; no connector imports payouts.

use crate::config::hub::PayoutsConfig;
use crate::config::{Config, ConnectorKind, OpRef};
use crate::dispatch::failure::DeliveryError;
use crate::dispatch::{Delivered, Sink};
use crate::formats::layout::Layout;
use crate::formats::pain::{GroupHeader, Pain001Writer, PaymentBlock, Transfer, Version};
use crate::store::{BankResult, BatchRow, Claimed, NewAlarm, PaymentRow, Store};
use futures::future::BoxFuture;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a payout step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayoutError {
    /// Not a `YYYY-MM` period.
    #[error("period {period:?}: {reason}")]
    Period {
        /// As given.
        period: String,
        /// Why.
        reason: String,
    },
    /// No operation takes payment files.
    #[error("no file or http connector operation takes payment files (xml_namespace urn:iso:std:iso:20022:tech:xsd:pain.001.001.03 or .09, or format = \"layout\")")]
    NoBankTarget,
    /// Several operations take payment files and none was named.
    #[error("several payment-file targets ({0}); name one with --target")]
    SeveralBankTargets(String),
    /// `--resend` of a batch the period does not hold.
    #[error("there is no live batch {batch} in {period}")]
    NoLiveBatch {
        /// The batch.
        batch: String,
        /// The period.
        period: String,
    },
    /// A batch's file cannot be made (a payment the format cannot carry).
    #[error("{0}")]
    File(String),
    /// A bank's result file cannot be read.
    #[error("{0}")]
    ResultFile(String),
    /// The files target's dispatcher stopped before it finished.
    #[error("the files target's dispatcher: {0}")]
    Dispatcher(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

mod build;
mod files;
mod holds;
mod payments;
mod reconcile;
mod render;

pub use build::*;
pub use files::*;
pub use holds::*;
pub use payments::*;
pub use reconcile::*;
pub use render::*;

/// Whether an operation is a pain.001 target, and which version.
pub fn pain_version(op: &crate::config::connector::Operation) -> Option<Version> {
    match op.xml_namespace.as_deref()? {
        "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03" => Some(Version::V03),
        "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09" => Some(Version::V09),
        _ => None,
    }
}

/// How a bank takes its payment files.
#[derive(Clone, Debug)]
pub enum BankFormat {
    /// ISO 20022 pain.001 of this version.
    Pain(Version),
    /// A delimited or fixed-width layout.
    Layout(Arc<Layout>),
}

/// Where a bank's payment files go.
#[derive(Clone, Debug)]
pub enum Destination {
    /// Dropped into this directory (a file connector).
    Dir(PathBuf),
    /// Uploaded to this URL, one request per file (an http connector).
    Upload(String),
    /// Uploaded into this directory on an SFTP server (an sftp connector).
    Sftp {
        /// The server.
        server: crate::connectors::sftp::settings::SftpSettings,
        /// The directory on it.
        dir: String,
    },
}

/// A bank's payment-file target.
#[derive(Clone, Debug)]
pub struct BankTarget {
    /// The sink operation (its messages are the payment instructions).
    pub op: OpRef,
    /// Where its files go.
    pub dest: Destination,
    /// What they look like.
    pub format: BankFormat,
}

impl BankTarget {
    /// The file name of a batch.
    pub fn file_name(&self, batch: &BatchRow) -> String {
        match &self.format {
            BankFormat::Pain(_) => format!("{}.pain001.xml", batch.batch_id),
            BankFormat::Layout(l) => l.payment_file_name(&batch.batch_id),
        }
    }

    /// The outbox target of its batch files.
    pub fn files_target(&self) -> String {
        files_target(&self.op)
    }

    /// Where a batch's file goes, in words.
    pub fn place(&self, batch: &BatchRow) -> String {
        match &self.dest {
            Destination::Dir(d) => d.join(self.file_name(batch)).display().to_string(),
            Destination::Upload(u) => format!("{u} as {}", self.file_name(batch)),
            Destination::Sftp { server, dir } => format!(
                "sftp://{}:{}/{}/{}",
                server.host,
                server.port,
                dir.trim_start_matches('/'),
                self.file_name(batch)
            ),
        }
    }
}

/// The outbox target of a payment target's batch files.
pub fn files_target(op: &OpRef) -> String {
    format!("{op}/files")
}

/// Whether a connector's operation is a payment-file target (a file or http
/// sink writing pain.001 or a bank layout), and how.
pub fn bank_format(c: &crate::config::Connector, op_name: &str) -> Option<BankFormat> {
    let op = c.spec.operations.get(op_name)?.get_ref();
    if !matches!(
        c.spec.kind,
        ConnectorKind::File | ConnectorKind::Http | ConnectorKind::Sftp
    ) || op.direction != crate::config::connector::Direction::Sink
    {
        return None;
    }
    if let Some(v) = pain_version(op) {
        return Some(BankFormat::Pain(v));
    }
    c.layouts.get(op_name).cloned().map(BankFormat::Layout)
}

/// The bank's payment-file target: the operation, where its files go and
/// their format. With several, `name` picks one.
pub fn bank_target(cfg: &Config, name: Option<&str>) -> Result<BankTarget, PayoutError> {
    let mut found = Vec::new();
    for (cname, c) in &cfg.connectors {
        for oname in c.spec.operations.keys() {
            if let Some(format) = bank_format(c, oname) {
                let r = OpRef {
                    connector: cname.clone(),
                    operation: oname.clone(),
                };
                if name.is_none_or(|n| n == r.to_string()) {
                    // Where the connector's kind puts this operation's
                    // files; a connector whose settings do not hold is
                    // reported by `tongban check` and never runs.
                    use crate::connectors::{file, http, settings, sftp};
                    let dest = match settings::of(&c.spec, &cfg.dir) {
                        Ok(settings::Settings::Http(h)) => match h.operations.get(oname) {
                            Some(http::settings::HttpOperation::Send(s)) => {
                                Destination::Upload(s.url.to_string())
                            }
                            _ => continue,
                        },
                        Ok(settings::Settings::File(f)) => match f.operations.get(oname) {
                            Some(file::settings::FileOperation::Write(w)) => {
                                Destination::Dir(w.dir.clone())
                            }
                            _ => continue,
                        },
                        Ok(settings::Settings::Sftp(f)) => match f.operations.get(oname) {
                            Some(sftp::settings::SftpOperation::Upload(u)) => Destination::Sftp {
                                dir: u.dir.clone(),
                                server: f,
                            },
                            _ => continue,
                        },
                        _ => continue,
                    };
                    found.push(BankTarget {
                        op: r,
                        dest,
                        format,
                    });
                }
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(PayoutError::NoBankTarget),
        _ => Err(PayoutError::SeveralBankTargets(
            found
                .iter()
                .map(|f| f.op.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}
