//! The settings of an `kind = "http"` connector: its base URL, time limit,
//! authentication and TLS, and each operation as what it is — a pull, a
//! webhook, or requests sent.

use crate::config::connector::{Auth, BodyFormat, Direction, Operation, Tls};
use crate::config::ConnectorSpec;
use crate::connectors::settings::{batch, Problems};
use crate::diag::Problem;
use std::collections::BTreeMap;
use std::time::Duration;
use toml::Spanned;

/// An HTTP connector.
pub struct HttpSettings<'a> {
    /// Every operation URL starts with it.
    pub base_url: reqwest::Url,
    /// Time limit of one request (default 30 s).
    pub timeout: Option<Duration>,
    /// How requests are authenticated (secrets not yet resolved).
    pub auth: Option<&'a Auth>,
    /// TLS files (not yet read).
    pub tls: Option<&'a Tls>,
    /// The operations, by name.
    pub operations: BTreeMap<String, HttpOperation>,
}

/// What an HTTP operation is.
#[derive(Clone, Debug)]
pub enum HttpOperation {
    /// The hub polls the system with a cursor.
    Pull(Pull),
    /// The system posts records to the hub's webhook endpoint.
    Webhook,
    /// The hub sends each message (or batch) as a request.
    Send(Send),
}

/// A polled source.
#[derive(Clone, Debug)]
pub struct Pull {
    /// `base_url` + `path`.
    pub url: reqwest::Url,
    /// Usually GET.
    pub method: reqwest::Method,
    /// Query parameter of the cursor.
    pub cursor_param: Option<String>,
    /// JSON: the field holding the records.
    pub items_field: Option<String>,
    /// The field (or XML element) holding the next cursor.
    pub next_cursor_field: Option<String>,
    /// Pause when there is nothing new (default 5 s).
    pub poll: Duration,
    /// JSON or XML answers.
    pub format: BodyFormat,
}

/// A sink: requests sent.
#[derive(Clone, Debug)]
pub struct Send {
    /// `base_url` + `path`.
    pub url: reqwest::Url,
    /// The method.
    pub method: reqwest::Method,
    /// What the bodies are.
    pub body: Body,
}

/// The body of a sink's requests.
#[derive(Clone, Debug)]
pub enum Body {
    /// JSON; above one record per request, `{"items": [...]}`.
    Json {
        /// Records per request.
        batch: usize,
    },
    /// One XML document per record.
    Xml {
        /// Root element.
        root: String,
        /// Default namespace.
        namespace: Option<String>,
        /// The envelope the record is placed in (`{record}`).
        envelope: Option<String>,
    },
    /// A bank's payment files (a layout, or pain.001 by its namespace),
    /// uploaded one file per request; made by the payout register.
    PaymentFiles,
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

impl<'a> HttpSettings<'a> {
    /// The settings a connector file gives, or every problem in it.
    pub fn of(spec: &'a ConnectorSpec) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        let base_url = match &spec.base_url {
            None => {
                p.connector(None, "an http connector needs base_url");
                None
            }
            Some(u) => {
                let v = u.get_ref();
                let parsed = reqwest::Url::parse(v)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
                if parsed.is_none() {
                    p.connector(
                        Some(u.span().start),
                        format!("base_url {v:?} must be an http:// or https:// URL"),
                    );
                }
                parsed
            }
        };
        if let Some(Auth::Hmac(h)) = spec.auth.as_ref().map(|a| a.get_ref()) {
            if !matches!(h.encoding.as_deref(), None | Some("hex" | "base64")) {
                p.connector(
                    spec.auth.as_ref().map(|a| a.span().start),
                    format!(
                        "hmac encoding {:?} must be hex or base64",
                        h.encoding.as_deref().unwrap_or_default()
                    ),
                );
            }
        }
        if let Some(a @ (Auth::Key(_) | Auth::Password(_))) =
            spec.auth.as_ref().map(|a| a.get_ref())
        {
            let t = if matches!(a, Auth::Key(_)) {
                "key"
            } else {
                "password"
            };
            p.connector(
                spec.auth.as_ref().map(|a| a.span().start),
                format!("auth type {t:?} is for sftp connectors; http connectors use bearer, basic or hmac"),
            );
        }
        if spec.brokers.is_some() || spec.directory.is_some() {
            p.connector(
                None,
                "brokers and directory are settings of kafka and file connectors; an http connector has base_url",
            );
        }
        let mut operations = BTreeMap::new();
        for (name, sop) in &spec.operations {
            let op = sop.get_ref();
            let url = |p: &mut Problems| {
                let path = op.path.as_deref().unwrap_or("");
                let base = spec.base_url.as_ref()?.get_ref().trim_end_matches('/');
                match reqwest::Url::parse(&format!("{base}{path}")) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        p.op(name, sop, format!("path {path:?} does not make a URL: {e}"));
                        None
                    }
                }
            };
            let method = |p: &mut Problems, default: &str| {
                let m = op.method.as_deref().unwrap_or(default);
                if METHODS.contains(&m) {
                    reqwest::Method::from_bytes(m.as_bytes()).ok()
                } else {
                    p.op(
                        name,
                        sop,
                        format!("method {m:?} must be GET, POST, PUT, PATCH or DELETE"),
                    );
                    None
                }
            };
            let mut allowed = vec!["method", "path", "xml_root", "xml_namespace"];
            let made = match op.direction {
                Direction::Source if op.webhook => {
                    allowed = vec!["webhook", "xml_root", "xml_namespace"];
                    match spec.auth.as_ref().map(|a| a.get_ref()) {
                        None | Some(Auth::Hmac(_)) => {}
                        Some(_) => p.op(
                            name,
                            sop,
                            "webhooks verify HMAC signatures only; set [auth] type = \"hmac\"",
                        ),
                    }
                    source_format(&mut p, name, sop);
                    Some(HttpOperation::Webhook)
                }
                Direction::Source => {
                    allowed.extend([
                        "poll_interval",
                        "cursor_param",
                        "items_field",
                        "next_cursor_field",
                    ]);
                    p_need(&mut p, name, sop, "method", op.method.is_some());
                    p_need(&mut p, name, sop, "path", op.path.is_some());
                    source_format(&mut p, name, sop);
                    let (url, method) = (url(&mut p), method(&mut p, "GET"));
                    url.zip(method).map(|(url, method)| {
                        HttpOperation::Pull(Pull {
                            url,
                            method,
                            cursor_param: op.cursor_param.clone(),
                            items_field: op.items_field.clone(),
                            next_cursor_field: op.next_cursor_field.clone(),
                            poll: op.poll_interval.map_or(Duration::from_secs(5), |d| d.0),
                            format: op.format,
                        })
                    })
                }
                Direction::Sink => {
                    allowed.extend(["xml_envelope", "layout", "batch"]);
                    if op.webhook {
                        p.op(name, sop, "webhook applies to source operations only");
                    }
                    p_need(&mut p, name, sop, "method", op.method.is_some());
                    p_need(&mut p, name, sop, "path", op.path.is_some());
                    let body = sink_body(&mut p, name, sop);
                    let (url, method) = (url(&mut p), method(&mut p, "POST"));
                    url.zip(method).zip(body).map(|((url, method), body)| {
                        HttpOperation::Send(Send { url, method, body })
                    })
                }
            };
            p.foreign(name, sop, "http", &allowed);
            if let Some(made) = made {
                operations.insert(name.clone(), made);
            }
        }
        let settings = base_url.map(|base_url| HttpSettings {
            base_url,
            timeout: spec.timeout.map(|d| d.0),
            auth: spec.auth.as_ref().map(|a| a.get_ref()),
            tls: spec.tls.as_ref(),
            operations,
        });
        match settings {
            Some(s) => p.or(s),
            None => Err(p.0),
        }
    }
}

fn p_need(p: &mut Problems, name: &str, op: &Spanned<Operation>, what: &str, have: bool) {
    if !have {
        p.need(name, op, "Http", what);
    }
}

/// Sources read JSON or XML.
fn source_format(p: &mut Problems, name: &str, op: &Spanned<Operation>) {
    match op.get_ref().format {
        BodyFormat::Json | BodyFormat::Xml => {}
        BodyFormat::Avro => p.op(name, op, "Avro bodies over HTTP are not read; use JSON or XML"),
        BodyFormat::Pain002 => p.op(name, op, "format pain002 applies to file source operations only"),
        BodyFormat::Layout => p.op(
            name,
            op,
            "format = \"layout\" goes with layout = \"layouts/….toml\", on file connectors or http sinks (payment file uploads)",
        ),
    }
}

/// What a sink's bodies are.
fn sink_body(p: &mut Problems, name: &str, sop: &Spanned<Operation>) -> Option<Body> {
    let op = sop.get_ref();
    let json_only = if op.format == BodyFormat::Json {
        Ok(())
    } else {
        Err("batch applies to sink operations (over http, with JSON bodies only)")
    };
    let batch = batch(p, name, sop, 1, json_only);
    if let Some(env) = &op.xml_envelope {
        if env.matches("{record}").count() != 1 || op.format != BodyFormat::Xml {
            p.op(
                name,
                sop,
                "xml_envelope needs format = \"xml\" and exactly one {record}",
            );
        }
    }
    if op.layout.is_some() != (op.format == BodyFormat::Layout) {
        p.op(
            name,
            sop,
            "format = \"layout\" goes with layout = \"layouts/….toml\", on file connectors or http sinks (payment file uploads)",
        );
    }
    let payment_ns = op
        .xml_namespace
        .as_deref()
        .is_some_and(|n| n.starts_with("urn:iso:std:iso:20022"));
    match op.format {
        BodyFormat::Json => Some(Body::Json { batch }),
        BodyFormat::Xml if payment_ns => Some(Body::PaymentFiles),
        BodyFormat::Xml => match &op.xml_root {
            None => {
                p.need(name, sop, "Http", "xml_root");
                None
            }
            Some(root) => Some(Body::Xml {
                root: root.clone(),
                namespace: op.xml_namespace.clone(),
                envelope: op.xml_envelope.clone(),
            }),
        },
        BodyFormat::Layout => Some(Body::PaymentFiles),
        BodyFormat::Avro => {
            p.op(
                name,
                sop,
                "Avro bodies over HTTP are not built; send JSON or XML, or write Avro to Kafka",
            );
            None
        }
        BodyFormat::Pain002 => {
            p.op(
                name,
                sop,
                "format pain002 applies to file source operations only",
            );
            None
        }
    }
}
