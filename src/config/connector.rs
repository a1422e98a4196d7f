//! `connectors/<system>.toml`: one external system and its named operations.

use super::hub::Dur;
use super::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// How the hub talks to the system.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    /// An HTTP API (JSON or XML bodies), pulled, pushed to, or pushing webhooks to the hub.
    Http,
    /// Kafka topics.
    Kafka,
    /// Files dropped in and out of directories.
    File,
    /// The hub's own deadline register: where each application is and
    /// when its stage is due, on a working-day calendar.
    Deadlines,
    /// The hub's own payout register: holds on a person's payments.
    PayoutRegister,
    /// Tables of a front-end database (前置库): rows read by watermark,
    /// rows written with their idempotency key.
    Database,
    /// Files on an SFTP server (a bank's channel): payment files uploaded,
    /// result files picked up.
    Sftp,
}

/// A connector file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSpec {
    /// `http`, `kafka`, `file`, `deadlines` or `payout_register`.
    pub kind: ConnectorKind,
    /// What the system is, for people.
    pub description: Option<String>,
    /// http: the base URL every operation path is joined to.
    pub base_url: Option<Spanned<String>>,
    /// kafka: bootstrap servers, `host:port[,host:port]`.
    pub brokers: Option<String>,
    /// database: `postgres` or `mysql` (MySQL and MariaDB).
    pub engine: Option<Spanned<String>>,
    /// database: the connection URL, a secret reference
    /// (`postgres://user:password@host:port/db`, `mysql://…`).
    pub url: Option<Secret>,
    /// database: the time zone of date-times stored without one
    /// (default `+08:00`, China Standard Time).
    pub time_zone: Option<Spanned<String>>,
    /// file: the directory files are exchanged in (relative to the config
    /// directory). sftp: the directory on the server (relative to the
    /// login directory unless it starts with `/`).
    pub directory: Option<String>,
    /// sftp: the server, `host` or `host:port` (port 22 by default).
    pub host: Option<Spanned<String>>,
    /// sftp: a known_hosts file holding the server's key (relative to the
    /// config directory).
    pub known_hosts: Option<String>,
    /// sftp: the server's key fingerprint, `SHA256:…` as `ssh-keygen -l`
    /// prints it.
    pub host_key: Option<Spanned<String>>,
    /// Time limit of one request.
    pub timeout: Option<Dur>,
    /// How requests are authenticated.
    pub auth: Option<Spanned<Auth>>,
    /// TLS settings for https.
    pub tls: Option<Tls>,
    /// Requests per second allowed to this system (all operations together).
    pub rate_limit: Option<RateLimit>,
    /// Requests in flight at once.
    pub concurrency: Option<u32>,
    /// Overrides the hub's retry schedule for this system.
    pub retry_schedule: Option<Vec<Dur>>,
    /// deadlines: the directory of the working-day calendar's year tables
    /// (relative to the config directory).
    pub calendar: Option<String>,
    /// deadlines: each stage's time limit, by stage name.
    #[serde(default)]
    pub stages: BTreeMap<String, Spanned<StageRule>>,
    /// Named operations, e.g. `pull_events`, `load_certificate`.
    #[serde(default)]
    pub operations: BTreeMap<String, Spanned<Operation>>,
}

/// deadlines: how long an application may stay in one stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRule {
    /// Working days after the day the stage began.
    pub working_days: u32,
    /// What the stage waits for, for people.
    pub awaits: String,
    /// Which office it is with, for people.
    pub office: String,
}

/// Authentication of requests.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(BearerAuth),
    /// HTTP basic authentication.
    Basic(BasicAuth),
    /// Signed requests: app key, millisecond timestamp, nonce and a MAC over
    /// method, path, timestamp, nonce and body digest.
    Hmac(HmacAuth),
    /// sftp: a user's private key (OpenSSH format).
    Key(KeyAuth),
    /// sftp: a user's password.
    Password(BasicAuth),
}

/// `type = "key"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAuth {
    /// User name.
    pub username: String,
    /// The private key, in OpenSSH or PEM format.
    pub private_key: Secret,
    /// Its passphrase, if it has one.
    pub passphrase: Option<Secret>,
}

/// `type = "bearer"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerAuth {
    /// The token.
    pub token: Secret,
}

/// `type = "basic"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// `type = "hmac"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacAuth {
    /// The app key, sent in clear.
    pub app_key: String,
    /// The shared secret.
    pub secret: Secret,
    /// MAC algorithm.
    #[serde(default)]
    pub algorithm: MacAlgorithm,
    /// The string to sign, with `{method}`, `{path}`, `{timestamp}`,
    /// `{nonce}`, `{app_key}` and `{body_digest}` (default:
    /// `"{method}\n{path}\n{timestamp}\n{nonce}\n{body_digest}"`).
    pub string_to_sign: Option<String>,
    /// `hex` (default) or `base64`.
    pub encoding: Option<String>,
    /// Header carrying the app key (default `X-App-Key`).
    pub app_key_header: Option<String>,
    /// Header carrying the timestamp in ms (default `X-Timestamp`).
    pub timestamp_header: Option<String>,
    /// Header carrying the nonce (default `X-Nonce`).
    pub nonce_header: Option<String>,
    /// Header carrying the signature (default `X-Signature`).
    pub signature_header: Option<String>,
}

/// MAC algorithms for signed requests.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MacAlgorithm {
    /// HMAC-SHA256.
    #[default]
    HmacSha256,
    /// HMAC-SM3 (GB/T 32905).
    HmacSm3,
}

/// TLS for https connections.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM file of the CA that signs the server's certificate.
    pub ca_file: Option<String>,
    /// PEM client certificate, for mutual TLS.
    pub client_cert: Option<String>,
    /// PEM client key.
    pub client_key: Option<Secret>,
}

/// A rate limit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed in a burst (defaults to `per_second`).
    pub burst: Option<u32>,
}

/// Direction of an operation, seen from the hub.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Records come from the system into the hub.
    Source,
    /// Records go from the hub to the system.
    Sink,
}

/// Body encoding of an operation's records.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// JSON.
    #[default]
    Json,
    /// XML (elements named as the schema's fields).
    Xml,
    /// Avro single-object encoding.
    Avro,
    /// file source: ISO 20022 `pain.002` bank status reports, reconciled
    /// against the payout register; one `PaymentResult` record per
    /// transaction goes on to the feeds.
    Pain002,
    /// file: a bank's delimited or fixed-width layout (see
    /// [`crate::formats::layout`]), named by `layout`: payment batch files
    /// for a sink, result files (reconciled like pain.002) for a source.
    Layout,
}

/// One named operation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// `source` or `sink`.
    pub direction: Direction,
    /// The Avro schema of its records (name in `schemas/`).
    pub schema: Spanned<String>,
    /// Body encoding.
    #[serde(default)]
    pub format: BodyFormat,
    /// source: the top-level string field that identifies a record at the
    /// source (deduplication); without it, a record's content hash is its id.
    pub id_field: Option<Spanned<String>>,
    /// What it does, for people.
    pub description: Option<String>,
    /// http: request method.
    pub method: Option<String>,
    /// http: path under `base_url`. file: the subdirectory of the
    /// connector's directory (default `in` for sources, `out` for sinks).
    pub path: Option<String>,
    /// http source: the system pushes records to the hub's webhook
    /// `POST /ingest/<connector>/<operation>` instead of being pulled.
    #[serde(default)]
    pub webhook: bool,
    /// http pull: how often to poll.
    pub poll_interval: Option<Dur>,
    /// http pull: query parameter that carries the cursor.
    pub cursor_param: Option<String>,
    /// http pull: JSON field of the response that holds the records.
    pub items_field: Option<String>,
    /// http pull: JSON field of the response that holds the next cursor.
    pub next_cursor_field: Option<String>,
    /// xml: the root element of a request body.
    pub xml_root: Option<String>,
    /// xml: the default namespace of the body.
    pub xml_namespace: Option<String>,
    /// xml sink: an envelope the record's element is placed in, with
    /// `{record}` where it goes and optionally `{idempotency_key}`, e.g.
    /// `"<Request xmlns='urn:x'><Head><Id>{idempotency_key}</Id></Head><Body>{record}</Body></Request>"`.
    pub xml_envelope: Option<String>,
    /// file, `format = "layout"`: the layout file, relative to the
    /// configuration directory (e.g. `layouts/bank_fixed_gbk.toml`).
    pub layout: Option<Spanned<String>>,
    /// kafka: the topic.
    pub topic: Option<String>,
    /// kafka source: the consumer group (default `tongban.<connector>.<operation>`).
    pub group: Option<String>,
    /// file: glob of the file names, e.g. `*.xml`.
    pub file_pattern: Option<String>,
    /// file: whether files travel with a `NAME.sha256` checksum file
    /// (default true). A source then reads a file only once its checksum
    /// file is there and matches; a sink writes one beside every file.
    pub checksum: Option<bool>,
    /// file source without checksum files: how long a file's size and time
    /// must stay unchanged before it is read (default 2s).
    pub settle_time: Option<Dur>,
    /// Rate limit for this operation alone.
    pub rate_limit: Option<RateLimit>,
    /// database: the front-end table read or written (`name` or
    /// `schema.name`).
    pub table: Option<String>,
    /// database source: a query read instead of a table, as written (its
    /// rows are paged by `watermark`).
    pub query: Option<String>,
    /// database source: the increasing column(s) rows are read in order
    /// of: an id, or a time then an id; the last one identifies a row.
    pub watermark: Option<OneOrMany>,
    /// database source: a column written once a row is stored
    /// (`{ column = "read_flag", value = "1" }`); rows not yet marked are
    /// read again however their watermark lies.
    pub mark: Option<Mark>,
    /// database sink: the column holding each row's idempotency key (with
    /// a unique constraint on it).
    pub key_column: Option<String>,
    /// database sink: upsert on these columns (a unique key) instead of
    /// inserting.
    pub upsert_on: Option<Vec<String>>,
    /// http sink: records per request (default 1). Above 1, the body is
    /// `{"items": [{"idempotency_key": …, "record": …}, …]}` and the
    /// receiver applies each item's key; JSON bodies only.
    pub batch: Option<Spanned<u32>>,
}

/// One name or several.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The names, in order.
    pub fn names(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A column a database source writes once a row is stored.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Mark {
    /// The column.
    pub column: String,
    /// The value written (and that marks a row read).
    pub value: String,
}

impl ConnectorSpec {
    /// Checks what every kind shares and serde cannot; returns (byte
    /// offset or None, message). What an operation needs depends on the
    /// connector's kind, and each kind checks it where it is implemented
    /// (`connectors::<kind>::settings`), when the hub plans it or
    /// `tongban check` runs.
    pub fn validate(&self) -> Vec<(Option<usize>, String)> {
        let mut out = Vec::new();
        let rates = std::iter::once(self.rate_limit.as_ref()).chain(
            self.operations
                .values()
                .map(|o| o.get_ref().rate_limit.as_ref()),
        );
        if rates.flatten().any(|r| r.per_second == 0) {
            out.push((None, "rate_limit.per_second must be at least 1".into()));
        }
        if self.concurrency == Some(0) {
            out.push((None, "concurrency must be at least 1".into()));
        }
        out
    }
}
