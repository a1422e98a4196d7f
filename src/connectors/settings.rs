//! A connector file made into the settings of its kind.
//!
//! `config` parses a connector file as it is written (one flat table of
//! optional settings per operation, with their places in the file) and
//! checks what all kinds share. What an operation *is* depends on the
//! connector's kind, and each kind says so next to its implementation:
//! [`http::settings`](super::http::settings),
//! [`kafka::settings`](super::kafka::settings),
//! [`file::settings`](super::file::settings). The hub plans and builds
//! from these typed settings only, and `tongban check` makes them exactly
//! as `run` does, so a connector file that one accepts the other accepts.

use super::{database, deadlines, file, http, kafka, register, sftp};
use crate::config::connector::{Direction, Operation};
use crate::config::{ConnectorKind, ConnectorSpec};
use crate::diag::Problem;
use std::path::Path;
use toml::Spanned;

/// A connector's settings, by kind.
pub enum Settings<'a> {
    /// An HTTP API.
    Http(http::settings::HttpSettings<'a>),
    /// Kafka topics.
    Kafka(kafka::settings::KafkaSettings),
    /// A directory of files.
    File(file::settings::FileSettings),
    /// The hub's deadline register.
    Deadlines(deadlines::settings::DeadlineSettings),
    /// The hub's payout register.
    Register(register::settings::RegisterSettings),
    /// Tables of a front-end database.
    Database(database::settings::DatabaseSettings),
    /// Directories on an SFTP server.
    Sftp(sftp::settings::SftpSettings),
}

/// The typed settings of a connector file; `dir` is the configuration
/// directory that relative paths start from. Every problem is returned,
/// each at its place in the file.
pub fn of<'a>(spec: &'a ConnectorSpec, dir: &Path) -> Result<Settings<'a>, Vec<Problem>> {
    let database_only = spec.engine.is_some() || spec.url.is_some() || spec.time_zone.is_some();
    if database_only && spec.kind != ConnectorKind::Database {
        return Err(vec![Problem::new(
            None,
            "engine, url and time_zone are settings of database connectors",
        )]);
    }
    let sftp_only = spec.host.is_some() || spec.known_hosts.is_some() || spec.host_key.is_some();
    if sftp_only && spec.kind != ConnectorKind::Sftp {
        return Err(vec![Problem::new(
            None,
            "host, known_hosts and host_key are settings of sftp connectors",
        )]);
    }
    match spec.kind {
        ConnectorKind::Sftp => sftp::settings::SftpSettings::of(spec, dir).map(Settings::Sftp),
        ConnectorKind::Http => http::settings::HttpSettings::of(spec).map(Settings::Http),
        ConnectorKind::Kafka => kafka::settings::KafkaSettings::of(spec).map(Settings::Kafka),
        ConnectorKind::File => file::settings::FileSettings::of(spec, dir).map(Settings::File),
        ConnectorKind::Deadlines => {
            deadlines::settings::DeadlineSettings::of(spec, dir).map(Settings::Deadlines)
        }
        ConnectorKind::PayoutRegister => {
            register::settings::RegisterSettings::of(spec).map(Settings::Register)
        }
        ConnectorKind::Database => {
            database::settings::DatabaseSettings::of(spec).map(Settings::Database)
        }
    }
}

/// Collects the problems of one connector file, each operation's at the
/// operation.
#[derive(Default)]
pub(crate) struct Problems(pub Vec<Problem>);

impl Problems {
    /// A problem of the connector as a whole (`at`: a field's offset).
    pub fn connector(&mut self, at: Option<usize>, message: impl Into<String>) {
        self.0.push(Problem::new(at, message));
    }

    /// A problem of operation `name`.
    pub fn op(&mut self, name: &str, op: &Spanned<Operation>, message: impl AsRef<str>) {
        self.0.push(Problem::new(
            Some(op.span().start),
            format!("operation {name}: {}", message.as_ref()),
        ));
    }

    /// A setting this kind needs and the operation lacks.
    pub fn need(&mut self, name: &str, op: &Spanned<Operation>, kind: &str, what: &str) {
        let dir = match op.get_ref().direction {
            Direction::Source => "source",
            Direction::Sink => "sink",
        };
        self.op(name, op, format!("a {kind} {dir} operation needs {what}"));
    }

    /// Settings that belong to other kinds: each is an error, so that a
    /// setting put in the wrong file, or misspelt into another kind's
    /// name, is not silently ignored.
    pub fn foreign(&mut self, name: &str, op: &Spanned<Operation>, kind: &str, allowed: &[&str]) {
        for field in set_fields(op.get_ref()) {
            if !allowed.contains(&field) {
                self.op(
                    name,
                    op,
                    format!("{field} is not a setting of {kind} operations"),
                );
            }
        }
    }

    /// The operations of a connector of one of the hub's own registers
    /// (`kind`, called `register` in messages): each a sink of `schema`
    /// records with no settings of its own; a problem for each that is not.
    pub fn register_sinks(
        &mut self,
        spec: &ConnectorSpec,
        kind: &str,
        register: &str,
        schema: &str,
    ) -> Vec<String> {
        let mut operations = Vec::new();
        for (name, sop) in &spec.operations {
            let op = sop.get_ref();
            if op.direction != Direction::Sink {
                self.op(
                    name,
                    sop,
                    format!("a {kind} connector only takes records (direction = \"sink\")"),
                );
                continue;
            }
            if op.schema.get_ref() != schema {
                self.op(
                    name,
                    sop,
                    format!(
                        "{register} takes {schema} records, not {}",
                        op.schema.get_ref()
                    ),
                );
                continue;
            }
            self.foreign(name, sop, kind, &[]);
            operations.push(name.clone());
        }
        operations
    }

    /// Settings, or every problem found.
    pub fn or<T>(self, settings: T) -> Result<T, Vec<Problem>> {
        if self.0.is_empty() {
            Ok(settings)
        } else {
            Err(self.0)
        }
    }
}

/// The kind-specific settings an operation sets, by name.
fn set_fields(op: &Operation) -> Vec<&'static str> {
    [
        ("method", op.method.is_some()),
        ("path", op.path.is_some()),
        ("webhook", op.webhook),
        ("poll_interval", op.poll_interval.is_some()),
        ("cursor_param", op.cursor_param.is_some()),
        ("items_field", op.items_field.is_some()),
        ("next_cursor_field", op.next_cursor_field.is_some()),
        ("xml_root", op.xml_root.is_some()),
        ("xml_namespace", op.xml_namespace.is_some()),
        ("xml_envelope", op.xml_envelope.is_some()),
        ("layout", op.layout.is_some()),
        ("topic", op.topic.is_some()),
        ("group", op.group.is_some()),
        ("file_pattern", op.file_pattern.is_some()),
        ("checksum", op.checksum.is_some()),
        ("settle_time", op.settle_time.is_some()),
        ("batch", op.batch.is_some()),
        ("table", op.table.is_some()),
        ("query", op.query.is_some()),
        ("watermark", op.watermark.is_some()),
        ("mark", op.mark.is_some()),
        ("key_column", op.key_column.is_some()),
        ("upsert_on", op.upsert_on.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(name, _)| name)
    .collect()
}

/// An operation's `batch`, checked: 1 to 10,000, above 1 only where
/// `allowed` (for what it says).
pub(crate) fn batch(
    p: &mut Problems,
    name: &str,
    op: &Spanned<Operation>,
    default: usize,
    allowed: Result<(), &str>,
) -> usize {
    let Some(b) = &op.get_ref().batch else {
        return default;
    };
    let n = *b.get_ref();
    let at = Some(b.span().start);
    if n == 0 || n > 10_000 {
        p.0.push(Problem::new(
            at,
            format!("operation {name}: batch must be 1 to 10000, not {n}"),
        ));
    } else if n > 1 {
        if let Err(why) = allowed {
            p.0.push(Problem::new(at, format!("operation {name}: {why}")));
        }
    }
    n as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::file::settings::{FileBody, FileOperation};
    use crate::connectors::http::settings::{Body, HttpOperation};
    use crate::connectors::kafka::settings::KafkaOperation;

    fn settings(text: &str) -> Result<Settings<'static>, Vec<String>> {
        let spec: &'static ConnectorSpec = Box::leak(Box::new(toml::from_str(text).unwrap()));
        of(spec, Path::new("/etc/tongban"))
            .map_err(|ps| ps.into_iter().map(|p| p.message).collect())
    }

    fn problems(text: &str) -> Vec<String> {
        match settings(text) {
            Ok(_) => vec![],
            Err(ps) => ps,
        }
    }

    #[test]
    fn an_http_connector_is_pulls_webhooks_and_sends() {
        let Ok(Settings::Http(h)) = settings(
            r#"
kind = "http"
base_url = "https://platform.example/"
[operations.events]
direction = "source"
schema = "X"
method = "GET"
path = "/events"
cursor_param = "after"
[operations.hook]
direction = "source"
schema = "X"
webhook = true
[operations.status]
direction = "sink"
schema = "X"
method = "PUT"
path = "/status"
format = "xml"
xml_root = "Status"
"#,
        ) else {
            panic!("not http settings")
        };
        let HttpOperation::Pull(p) = &h.operations["events"] else {
            panic!("events is a pull")
        };
        assert_eq!(p.url.as_str(), "https://platform.example/events");
        assert_eq!(p.cursor_param.as_deref(), Some("after"));
        assert_eq!(p.poll, std::time::Duration::from_secs(5));
        assert!(matches!(h.operations["hook"], HttpOperation::Webhook));
        let HttpOperation::Send(s) = &h.operations["status"] else {
            panic!("status is a send")
        };
        assert_eq!(s.method, reqwest::Method::PUT);
        assert!(matches!(&s.body, Body::Xml { root, .. } if root == "Status"));
    }

    #[test]
    fn each_kind_says_what_it_needs_and_what_is_not_its_own() {
        let p = problems(
            r#"
kind = "http"
base_url = "ftp://x"
[operations.a]
direction = "sink"
schema = "X"
format = "xml"
topic = "t"
batch = 5
"#,
        );
        assert_eq!(
            p,
            [
                "base_url \"ftp://x\" must be an http:// or https:// URL",
                "operation a: a Http sink operation needs method",
                "operation a: a Http sink operation needs path",
                "operation a: batch applies to sink operations (over http, with JSON bodies only)",
                "operation a: a Http sink operation needs xml_root",
                "operation a: topic is not a setting of http operations",
            ]
        );
        let p = problems(
            "kind = \"kafka\"\n[operations.a]\ndirection = \"source\"\nschema = \"X\"\ntopic = \"t\"\nmethod = \"GET\"\nformat = \"xml\"\n",
        );
        assert_eq!(
            p,
            [
                "a kafka connector needs brokers",
                "operation a: method is not a setting of kafka source operations",
                "operation a: Kafka values are read as Avro or JSON",
            ]
        );
        let p = problems(
            "kind = \"file\"\ndirectory = \"d\"\n[operations.a]\ndirection = \"sink\"\nschema = \"X\"\nfile_pattern = \"[\"\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("operation a: file_pattern \"[\": "),
            "{p:?}"
        );
    }

    #[test]
    fn a_kafka_connector_consumes_and_produces() {
        let Ok(Settings::Kafka(k)) = settings(
            "kind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\n[operations.a]\ndirection = \"source\"\nschema = \"X\"\ntopic = \"in\"\n[operations.b]\ndirection = \"sink\"\nschema = \"X\"\ntopic = \"out\"\nformat = \"avro\"\n",
        ) else {
            panic!("not kafka settings")
        };
        assert!(
            matches!(&k.operations["a"], KafkaOperation::Consume { topic, group: None } if topic == "in")
        );
        assert!(matches!(
            &k.operations["b"],
            KafkaOperation::Produce { topic, avro: true, batch: 1000 } if topic == "out"
        ));
    }

    #[test]
    fn a_file_connector_watches_and_writes_under_the_config_directory() {
        let Ok(Settings::File(f)) = settings(
            "kind = \"file\"\ndirectory = \"var/bank\"\n[operations.r]\ndirection = \"source\"\nschema = \"X\"\nfile_pattern = \"*.xml\"\nformat = \"pain002\"\nchecksum = false\n[operations.p]\ndirection = \"sink\"\nschema = \"X\"\nfile_pattern = \"*.xml\"\nformat = \"xml\"\nxml_namespace = \"urn:iso:std:iso:20022:tech:xsd:pain.001.001.03\"\n[operations.j]\ndirection = \"sink\"\nschema = \"X\"\nfile_pattern = \"*.jsonl\"\nbatch = 50\npath = \"j\"\n",
        ) else {
            panic!("not file settings")
        };
        let FileOperation::Watch(w) = &f.operations["r"] else {
            panic!("r is watched")
        };
        assert_eq!(w.dir, Path::new("/etc/tongban/var/bank/in"));
        assert!(w.bank_results());
        assert!(matches!(
            w.readiness,
            crate::connectors::file::Readiness::Quiet(d) if d == std::time::Duration::from_secs(2)
        ));
        assert!(matches!(
            &f.operations["p"],
            FileOperation::Write(w) if matches!(w.body, FileBody::PaymentFiles)
        ));
        assert!(matches!(
            &f.operations["j"],
            FileOperation::Write(w) if w.dir == Path::new("/etc/tongban/var/bank/j")
                && matches!(w.body, FileBody::Json { batch: 50 })
        ));
    }
}
