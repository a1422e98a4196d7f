//! HTTP: pushing records to a system's API (JSON or XML bodies, one or a
//! batch per request), pulling them by cursor, and receiving them as
//! webhooks; requests authenticated by bearer token, basic auth or HMAC
//! signing, over TLS with a custom CA and client certificates if needed.

pub mod pull;
pub mod settings;
pub mod sign;
pub mod webhook;

use crate::connectors::BuildError;
use crate::dispatch::failure::{excerpt, DeliveryError};
use crate::dispatch::{Delivered, Sink};
use crate::store::Claimed;
use futures::future::BoxFuture;
use std::time::Duration;

/// How requests are authenticated (secrets already resolved).
#[derive(Clone)]
pub enum HttpAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// HTTP basic authentication: user name and password.
    Basic(String, String),
    /// HMAC request signing.
    Hmac(sign::Signer),
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        match self {
            HttpAuth::Bearer(_) => f.write_str("Bearer(***)"),
            HttpAuth::Basic(u, _) => write!(f, "Basic({u}, ***)"),
            HttpAuth::Hmac(s) => write!(f, "Hmac({s:?})"),
        }
    }
}

/// Pushes each message as the body of one request, with its idempotency key.
pub struct HttpSink {
    auth: Option<HttpAuth>,
    client: reqwest::Client,
    url: reqwest::Url,
    method: reqwest::Method,
    content_type: &'static str,
    timeout: Duration,
    batch: usize,
    /// XML bodies: root element and default namespace.
    xml: Option<(String, Option<String>)>,
    /// XML bodies: the envelope around the record (`{record}`, `{idempotency_key}`).
    envelope: Option<String>,
}

impl HttpSink {
    /// A sink that sends `method url` with JSON bodies.
    pub fn new(url: &str, method: &str, timeout: Duration) -> Result<Self, BuildError> {
        let url = reqwest::Url::parse(url).map_err(|e| BuildError::Url {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| BuildError::Method(method.to_string()))?;
        let client = client(timeout, &Tls::default())?;
        Ok(HttpSink {
            auth: None,
            client,
            url,
            method,
            content_type: "application/json",
            timeout,
            batch: 1,
            xml: None,
            envelope: None,
        })
    }

    /// Uses these TLS settings (a custom CA, a client certificate).
    pub fn with_tls(mut self, tls: &Tls) -> Result<Self, BuildError> {
        self.client = client(self.timeout, tls)?;
        Ok(self)
    }

    /// Authenticates every request.
    pub fn with_auth(mut self, auth: Option<HttpAuth>) -> Self {
        self.auth = auth;
        self
    }

    /// Carries up to `n` messages per request (JSON bodies).
    pub fn with_batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Sends XML documents (`<root xmlns="namespace">…`) instead of JSON.
    pub fn with_xml(mut self, root: &str, namespace: Option<&str>) -> Self {
        self.xml = Some((root.to_string(), namespace.map(str::to_string)));
        self.content_type = "application/xml; charset=utf-8";
        self
    }

    /// Places XML records inside an envelope: `{record}` marks where the
    /// record's element goes, `{idempotency_key}` is replaced by the key.
    pub fn with_xml_envelope(mut self, envelope: Option<&str>) -> Self {
        self.envelope = envelope.map(str::to_string);
        self
    }

    async fn send(&self, m: &Claimed) -> Result<Delivered, DeliveryError> {
        let body = match &self.xml {
            None => m.payload.clone(),
            Some((root, ns)) => {
                let doc = crate::formats::xml::json_to_document(&m.payload, root, ns.as_deref())
                    .map_err(|e| DeliveryError::Request(e.to_string()))?;
                match &self.envelope {
                    None => doc,
                    Some(env) => enveloped(&doc, env, &m.idem_key),
                }
            }
        };
        self.request(body, Some(&m.idem_key), None, &[], self.content_type)
            .await
    }

    /// Sends a file as the body of one request, with the message's
    /// idempotency key and these headers (its name and checksum, say).
    pub async fn upload(
        &self,
        body: Vec<u8>,
        idem_key: &str,
        headers: &[(&'static str, String)],
        content_type: &'static str,
    ) -> Result<Delivered, DeliveryError> {
        self.request(body, Some(idem_key), None, headers, content_type)
            .await
    }

    /// The URL requests go to.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// `{"items": [{"idempotency_key": "…", "record": …}, …]}`.
    async fn send_batch(&self, ms: &[Claimed]) -> Result<Delivered, DeliveryError> {
        let mut body =
            Vec::with_capacity(ms.iter().map(|m| m.payload.len() + 64).sum::<usize>() + 16);
        body.extend_from_slice(b"{\"items\":[");
        for (i, m) in ms.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"idempotency_key\":");
            // Idempotency keys are hex digests: no escaping needed, but be safe.
            body.extend_from_slice(
                serde_json::to_string(&m.idem_key)
                    .unwrap_or_default()
                    .as_bytes(),
            );
            body.extend_from_slice(b",\"record\":");
            body.extend_from_slice(&m.payload);
            body.push(b'}');
        }
        body.extend_from_slice(b"]}");
        self.request(body, None, Some(ms.len()), &[], self.content_type)
            .await
    }

    async fn request(
        &self,
        body: Vec<u8>,
        idem_key: Option<&str>,
        batch: Option<usize>,
        headers: &[(&'static str, String)],
        content_type: &'static str,
    ) -> Result<Delivered, DeliveryError> {
        let req = self.client.request(self.method.clone(), self.url.clone());
        let req = authorize(req, self.auth.as_ref(), &self.method, &self.url, &body);
        let req = match idem_key {
            Some(k) => req.header("Idempotency-Key", k),
            None => req,
        };
        let req = match batch {
            Some(n) => req.header("X-Tongban-Batch-Size", n),
            None => req,
        };
        let req = headers
            .iter()
            .fold(req, |req, (name, value)| req.header(*name, value));
        let resp = req
            .header("Content-Type", content_type)
            .body(body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| classify(e, self.timeout))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                crate::dispatch::retry::parse_retry_after(v, std::time::SystemTime::now())
            });
        let answer = read_answer(resp).await;
        if (200..300).contains(&status) {
            Ok(Delivered {
                status_code: Some(status),
                excerpt: answer.cut.then(|| {
                    format!(
                        "the answer was longer than {} MiB: read no further",
                        MAX_ANSWER_BYTES >> 20
                    )
                }),
                response_sha256: Some(answer.sha256),
            })
        } else {
            Err(DeliveryError::Status {
                status,
                retry_after,
                excerpt: excerpt(&String::from_utf8_lossy(&answer.head), 200),
            })
        }
    }
}

/// The most of an answer's body read: a target that answers with more
/// (a gigabyte, or without end) is read no further, so a delivery never
/// holds more than this, and never waits for the rest.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// What is kept of an answer's body.
struct Answer {
    /// Its first bytes, for an excerpt.
    head: Vec<u8>,
    /// SHA-256 (hex) of the bytes read.
    sha256: String,
    /// Whether it went on past [`MAX_ANSWER_BYTES`].
    cut: bool,
}

/// Reads an answer's body as it comes, up to [`MAX_ANSWER_BYTES`]: hashed
/// piece by piece, its first 4 KiB kept. A body that breaks off ends the
/// read (the status has been given).
async fn read_answer(mut resp: reqwest::Response) -> Answer {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let (mut head, mut read, mut cut) = (Vec::new(), 0usize, false);
    while let Ok(Some(chunk)) = resp.chunk().await {
        let take = chunk.len().min(MAX_ANSWER_BYTES - read);
        h.update(&chunk[..take]);
        let keep = take.min(4096usize.saturating_sub(head.len()));
        head.extend_from_slice(&chunk[..keep]);
        read += take;
        if take < chunk.len() || read == MAX_ANSWER_BYTES {
            cut = take < chunk.len() || resp.chunk().await.is_ok_and(|c| c.is_some());
            break;
        }
    }
    Answer {
        head,
        sha256: crate::domain::hex(&h.finalize()),
        cut,
    }
}

/// A document's root element inside an envelope, under one XML declaration.
pub fn enveloped(doc: &[u8], envelope: &str, idem_key: &str) -> Vec<u8> {
    const DECL: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>";
    let element = doc.strip_prefix(DECL).unwrap_or(doc);
    let element = String::from_utf8_lossy(element);
    let mut out = DECL.to_vec();
    out.extend_from_slice(
        envelope
            .replace("{idempotency_key}", idem_key)
            .replace("{record}", &element)
            .as_bytes(),
    );
    out
}

/// TLS settings of a connector, as PEM bytes (files already read).
#[derive(Clone, Default)]
pub struct Tls {
    /// A CA certificate to trust (besides the system's roots).
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and private key, for mutual TLS.
    pub identity_pem: Option<Vec<u8>>,
}

/// A client with keep-alive connections, the hub's User-Agent, a connect
/// timeout and these TLS settings.
pub fn client(timeout: Duration, tls: &Tls) -> Result<reqwest::Client, BuildError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(64)
        .user_agent(format!(
            "tongban/{} (pid {})",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        ));
    if let Some(ca) = &tls.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(ca).map_err(BuildError::CaFile)?;
        if certs.is_empty() {
            return Err(BuildError::NoCaCertificate);
        }
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
    }
    if let Some(id) = &tls.identity_pem {
        let id = reqwest::Identity::from_pem(id).map_err(BuildError::Identity)?;
        b = b.identity(id);
    }
    b.build().map_err(BuildError::Client)
}

/// Adds the authentication of `auth` to a request for `method url` with
/// this body.
pub(crate) fn authorize(
    req: reqwest::RequestBuilder,
    auth: Option<&HttpAuth>,
    method: &reqwest::Method,
    url: &reqwest::Url,
    body: &[u8],
) -> reqwest::RequestBuilder {
    match auth {
        None => req,
        Some(HttpAuth::Bearer(t)) => req.bearer_auth(t),
        Some(HttpAuth::Basic(u, p)) => req.basic_auth(u, Some(p)),
        Some(HttpAuth::Hmac(signer)) => {
            let path = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_string(),
            };
            let headers = signer.sign(method.as_str(), &path, body, crate::store::now_ms());
            headers
                .into_iter()
                .fold(req, |req, (name, value)| req.header(name, value))
        }
    }
}

pub(crate) fn classify(e: reqwest::Error, timeout: Duration) -> DeliveryError {
    if e.is_timeout() {
        DeliveryError::Timeout(timeout)
    } else if e.is_connect() {
        DeliveryError::Connect(root_cause(&e))
    } else if e.is_builder() {
        DeliveryError::Request(root_cause(&e))
    } else {
        DeliveryError::Io(root_cause(&e))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl Sink for HttpSink {
    fn deliver<'a>(&'a self, m: &'a Claimed) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.send(m))
    }

    fn max_batch(&self) -> usize {
        self.batch
    }

    fn deliver_batch<'a>(
        &'a self,
        ms: &'a [Claimed],
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.send_batch(ms))
    }
}
