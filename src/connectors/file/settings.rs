//! The settings of a `kind = "file"` connector: its directory, and each
//! operation as a watched directory or a directory written to.

use super::Readiness;
use crate::config::connector::{BodyFormat, Direction};
use crate::config::ConnectorSpec;
use crate::connectors::settings::{batch, Problems};
use crate::diag::Problem;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A file connector.
pub struct FileSettings {
    /// The operations, by name.
    pub operations: BTreeMap<String, FileOperation>,
}

/// What a file operation is.
#[derive(Clone, Debug)]
pub enum FileOperation {
    /// Files picked up from a directory.
    Watch(Watch),
    /// Files written into a directory.
    Write(Write),
}

/// A watched directory.
#[derive(Clone, Debug)]
pub struct Watch {
    /// `directory/path` (default `in`), from the configuration directory.
    pub dir: PathBuf,
    /// Which file names are read.
    pub pattern: glob::Pattern,
    /// When a file is complete.
    pub readiness: Readiness,
    /// Pause between looks (default 1 s).
    pub poll: Duration,
    /// How a file's records are read.
    pub format: BodyFormat,
}

impl Watch {
    /// Bank result files (pain.002 or a layout's), reconciled against the
    /// payout register before their records go on.
    pub fn bank_results(&self) -> bool {
        matches!(self.format, BodyFormat::Pain002 | BodyFormat::Layout)
    }
}

/// A directory written to.
#[derive(Clone, Debug)]
pub struct Write {
    /// `directory/path` (default `out`), from the configuration directory.
    pub dir: PathBuf,
    /// What the files are.
    pub body: FileBody,
}

/// What a file sink writes.
#[derive(Clone, Debug)]
pub enum FileBody {
    /// JSON lines, `batch` records per file.
    Json {
        /// Records per file.
        batch: usize,
    },
    /// One XML document per record, `batch` per file.
    Xml {
        /// Root element (default `record`).
        root: String,
        /// Default namespace.
        namespace: Option<String>,
        /// Records per file.
        batch: usize,
    },
    /// A bank's payment files (a layout, or pain.001 by its namespace),
    /// made by the payout register.
    PaymentFiles,
}

/// An operation's `file_pattern`, or a problem if it has none or it is
/// not a glob (`kind`: `File` or `SFTP`, for the message).
pub(crate) fn file_pattern(
    p: &mut Problems,
    name: &str,
    sop: &toml::Spanned<crate::config::connector::Operation>,
    kind: &str,
) -> Option<glob::Pattern> {
    let Some(pattern) = sop.get_ref().file_pattern.as_deref() else {
        p.need(name, sop, kind, "file_pattern");
        return None;
    };
    match glob::Pattern::new(pattern) {
        Ok(g) => Some(g),
        Err(e) => {
            p.op(name, sop, format!("file_pattern {pattern:?}: {e}"));
            None
        }
    }
}

/// When a source operation's files are complete: once their checksum
/// file is there (the default), or, with `checksum = false`, once they have
/// not changed for `settle_time` (default 2 s).
pub(crate) fn readiness(op: &crate::config::connector::Operation) -> Readiness {
    if op.checksum.unwrap_or(true) {
        Readiness::Checksum
    } else {
        Readiness::Quiet(op.settle_time.map_or(Duration::from_secs(2), |d| d.0))
    }
}

impl FileSettings {
    /// The settings a connector file gives, or every problem in it; paths
    /// start from `dir`, the configuration directory.
    pub fn of(spec: &ConnectorSpec, dir: &Path) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        let base = spec.directory.as_deref().filter(|d| !d.is_empty());
        if base.is_none() {
            p.connector(None, "a file connector needs directory");
        }
        if spec.base_url.is_some() || spec.brokers.is_some() {
            p.connector(
                None,
                "base_url and brokers are settings of http and kafka connectors; a file connector has directory",
            );
        }
        let base = dir.join(base.unwrap_or("."));
        let mut operations = BTreeMap::new();
        for (name, sop) in &spec.operations {
            let op = sop.get_ref();
            let Some(pattern) = file_pattern(&mut p, name, sop, "File") else {
                continue;
            };
            let layout_ok = op.layout.is_some() == (op.format == BodyFormat::Layout);
            if !layout_ok {
                p.op(
                    name,
                    sop,
                    "format = \"layout\" goes with layout = \"layouts/….toml\", on file connectors or http sinks (payment file uploads)",
                );
            }
            let made = match op.direction {
                Direction::Source => {
                    p.foreign(
                        name,
                        sop,
                        "file source",
                        &[
                            "path",
                            "file_pattern",
                            "checksum",
                            "settle_time",
                            "poll_interval",
                            "xml_root",
                            "xml_namespace",
                            "layout",
                        ],
                    );
                    let readiness = readiness(op);
                    FileOperation::Watch(Watch {
                        dir: base.join(op.path.as_deref().unwrap_or("in")),
                        pattern,
                        readiness,
                        poll: op.poll_interval.map_or(Duration::from_secs(1), |d| d.0),
                        format: op.format,
                    })
                }
                Direction::Sink => {
                    p.foreign(
                        name,
                        sop,
                        "file sink",
                        &[
                            "path",
                            "file_pattern",
                            "checksum",
                            "xml_root",
                            "xml_namespace",
                            "layout",
                            "batch",
                        ],
                    );
                    let batch = batch(&mut p, name, sop, 1, Ok(()));
                    let payment_ns = op
                        .xml_namespace
                        .as_deref()
                        .is_some_and(|n| n.starts_with("urn:iso:std:iso:20022"));
                    let body = match op.format {
                        BodyFormat::Json => FileBody::Json { batch },
                        BodyFormat::Xml if payment_ns => FileBody::PaymentFiles,
                        BodyFormat::Xml => FileBody::Xml {
                            root: op.xml_root.clone().unwrap_or_else(|| "record".into()),
                            namespace: op.xml_namespace.clone(),
                            batch,
                        },
                        BodyFormat::Layout => FileBody::PaymentFiles,
                        BodyFormat::Avro => {
                            p.op(
                                name,
                                sop,
                                "Avro files are not written by the file sink; use JSON or XML",
                            );
                            continue;
                        }
                        BodyFormat::Pain002 => {
                            p.op(
                                name,
                                sop,
                                "format pain002 applies to file source operations only",
                            );
                            continue;
                        }
                    };
                    FileOperation::Write(Write {
                        dir: base.join(op.path.as_deref().unwrap_or("out")),
                        body,
                    })
                }
            };
            operations.insert(name.clone(), made);
        }
        p.or(FileSettings { operations })
    }
}
