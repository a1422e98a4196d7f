//! HTTP: pushing records to a system's API. (Pulling, webhooks, signing
//! and XML bodies are the connectors issue's; this is the push path the
//! dispatcher needs.)

use crate::dispatch::failure::{excerpt, DeliveryError};
use crate::dispatch::{Delivered, Sink};
use crate::store::Claimed;
use futures::future::BoxFuture;
use std::time::Duration;

/// Pushes each message as the body of one request, with its idempotency key.
pub struct HttpSink {
    client: reqwest::Client,
    url: reqwest::Url,
    method: reqwest::Method,
    content_type: &'static str,
    timeout: Duration,
}

impl HttpSink {
    /// A sink that sends `method url` with JSON bodies.
    pub fn new(url: &str, method: &str, timeout: Duration) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("bad URL {url:?}: {e}"))?;
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HttpSink {
            client,
            url,
            method,
            content_type: "application/json",
            timeout,
        })
    }

    async fn send(&self, m: &Claimed) -> Result<Delivered, DeliveryError> {
        let resp = self
            .client
            .request(self.method.clone(), self.url.clone())
            .header("Idempotency-Key", &m.idem_key)
            .header("Content-Type", self.content_type)
            .body(m.payload.clone())
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
        let body = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            Ok(Delivered {
                status_code: Some(status),
                excerpt: None,
            })
        } else {
            Err(DeliveryError::Status {
                status,
                retry_after,
                excerpt: excerpt(&body, 200),
            })
        }
    }
}

fn classify(e: reqwest::Error, timeout: Duration) -> DeliveryError {
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
}
