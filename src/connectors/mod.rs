//! Connectors: how records come into the hub (sources) and leave it
//! (sinks), one folder per kind of system interface.
//!
//! Layer 6: transports only. They use the configuration, the pipeline
//! (intake), the dispatcher's `Sink`, the formats, the schemas and the
//! store; they import no payout or hub code (bank result files go to a
//! handler the hub wires in).

pub mod database;
pub mod deadlines;
pub mod file;
pub mod http;
pub mod intake;
pub mod kafka;
pub mod register;
pub mod settings;
pub mod sftp;

use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

/// Between two polls of a source: waits `wait` (not at all if zero) or
/// until `shutdown`; true if the source is to stop.
pub(crate) async fn pause(wait: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    if !wait.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
    *shutdown.borrow()
}

/// Why a source or sink cannot be made from its settings (nothing has
/// been connected to yet).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A URL that does not parse.
    #[error("bad URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// An HTTP method that is not one.
    #[error("bad method {0:?}")]
    Method(String),
    /// `tls.ca_file` is not PEM.
    #[error("tls.ca_file is not a PEM certificate: {0}")]
    CaFile(reqwest::Error),
    /// `tls.ca_file` holds nothing.
    #[error("tls.ca_file holds no PEM certificate")]
    NoCaCertificate,
    /// The client certificate and key do not go together.
    #[error("tls.client_cert and tls.client_key are not a PEM certificate and key: {0}")]
    Identity(reqwest::Error),
    /// The HTTP client cannot be made.
    #[error("HTTP client: {0}")]
    Client(reqwest::Error),
    /// The HMAC signature encoding.
    #[error("hmac encoding {0:?} must be hex or base64")]
    Encoding(String),
    /// A Kafka client cannot be made.
    #[error("Kafka {what}: {source}")]
    Kafka {
        /// `producer` or `consumer`.
        what: &'static str,
        /// Why.
        source: rdkafka::error::KafkaError,
    },
    /// A Kafka consumer cannot subscribe.
    #[error("subscribing to {topic}: {source}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// Why.
        source: rdkafka::error::KafkaError,
    },
    /// A directory cannot be made.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A schema named by an operation is not loaded.
    #[error("no schema {0}")]
    NoSchema(String),
    /// A secret cannot be read.
    #[error(transparent)]
    Secret(#[from] crate::config::secret::SecretError),
    /// The source's feeds cannot be set up.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
}
