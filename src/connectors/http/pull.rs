//! Pulling records from a system's API by cursor.
//!
//! Each poll asks `method base_url+path?<cursor_param>=<cursor>` (no cursor
//! parameter on the very first poll). A JSON answer holds the records in
//! `items_field` (or is itself an array) and the next cursor in
//! `next_cursor_field`; an XML answer holds one record per child element of
//! its root, and the next cursor in the child element named
//! `next_cursor_field`. The records of one page and the cursor after them
//! are stored in one transaction, so a hub that dies mid-page asks for the
//! same page again and the inbox keeps each record once; a page with no
//! records and a new cursor moves the cursor alone. While pages come
//! back full of records with a new cursor the next page is asked at once;
//! otherwise the source waits `poll_interval`.
//!
//! An answer that cannot be read (not the declared format, truncated, too
//! large, entity declarations) is logged with the reason and asked again
//! after the interval; the cursor does not move and the hub keeps running.

use super::{authorize, HttpAuth};
use crate::config::BodyFormat;
use crate::connectors::intake::Intake;
use crate::dispatch::failure::DeliveryError;
use quick_xml::events::Event;
use std::time::Duration;
use tokio::sync::watch;

/// Largest answer read, in bytes.
pub const MAX_PAGE_BYTES: usize = 32 << 20;

/// Why a page cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PageError {
    /// The body is not JSON.
    #[error("not JSON ({error}); it starts {start:?}")]
    NotJson {
        /// The parser's message.
        error: String,
        /// The body's first characters.
        start: String,
    },
    /// `items_field` holds something else than an array.
    #[error("`{0}` is not an array")]
    NotArray(String),
    /// The body is not an object with `items_field`.
    #[error("not an object with `{0}`")]
    NoItems(String),
    /// Without `items_field`, the body must be an array.
    #[error("not an array of records (set items_field)")]
    NotRecords,
    /// The body is not UTF-8.
    #[error("not UTF-8 (byte {0})")]
    NotUtf8(usize),
    /// The body is not well-formed XML.
    #[error("not well-formed XML at byte {at}: {error}")]
    Xml {
        /// Where.
        at: u64,
        /// The parser's message.
        error: String,
    },
    /// A DTD (entities are never expanded).
    #[error("a DOCTYPE is not accepted (entity declarations are refused)")]
    DocType,
    /// The cursor element's text cannot be decoded.
    #[error("cursor text: {0}")]
    Cursor(String),
    /// The document ends inside an element.
    #[error("truncated XML: the document ends inside an element")]
    Truncated,
    /// No root element.
    #[error("no root element")]
    NoRoot,
}

/// Why a poll failed (the cursor has not moved; the page is asked again).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// The request failed.
    #[error(transparent)]
    Request(DeliveryError),
    /// The answer is over [`MAX_PAGE_BYTES`].
    #[error("{url}: the answer is larger than {MAX_PAGE_BYTES} bytes; not read")]
    TooLarge {
        /// The request.
        url: reqwest::Url,
    },
    /// The system answered with an error status.
    #[error("{url}: HTTP {status}: {excerpt}")]
    Status {
        /// The request.
        url: reqwest::Url,
        /// The status.
        status: reqwest::StatusCode,
        /// The body's beginning.
        excerpt: String,
    },
    /// The answer cannot be read.
    #[error("{url}: the answer cannot be read: {error}")]
    Unreadable {
        /// The request.
        url: reqwest::Url,
        /// Why.
        error: PageError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A pull source.
pub struct HttpPull {
    /// Where its records go.
    pub intake: Intake,
    /// The client (keep-alive, TLS).
    pub client: reqwest::Client,
    /// `base_url` + `path`.
    pub url: reqwest::Url,
    /// Usually GET.
    pub method: reqwest::Method,
    /// Authentication.
    pub auth: Option<HttpAuth>,
    /// Query parameter of the cursor.
    pub cursor_param: Option<String>,
    /// JSON: field holding the records.
    pub items_field: Option<String>,
    /// Field (or XML element) holding the next cursor.
    pub next_cursor_field: Option<String>,
    /// Pause when there is nothing new.
    pub poll: Duration,
    /// Time limit of one request.
    pub timeout: Duration,
    /// Body format of the answers.
    pub format: BodyFormat,
}

/// One page as read: its records and the cursor after them.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    /// Records, each as its own bytes (a JSON value or an XML element).
    pub records: Vec<Vec<u8>>,
    /// The next cursor, if the answer gave one.
    pub next: Option<String>,
}

impl HttpPull {
    /// Polls until `shutdown`.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let source = self.intake.source().to_string();
        tracing::info!(source = %source, url = %self.url, "Pulling");
        loop {
            let wait = match self.poll_once().await {
                Ok(more) if more => Duration::ZERO,
                Ok(_) => self.poll,
                Err(e) => {
                    tracing::warn!(source = %source, error = %e, "Pull failed; asking again later");
                    self.poll
                }
            };
            if crate::connectors::pause(wait, &mut shutdown).await {
                return;
            }
        }
    }

    /// Asks for one page and stores it; true if another page may follow at once.
    pub async fn poll_once(&self) -> Result<bool, PullError> {
        let source = self.intake.source().to_string();
        let cursor = self.intake.store().cursor(&source).await?;
        let mut url = self.url.clone();
        if let (Some(p), Some(c)) = (&self.cursor_param, &cursor) {
            url.query_pairs_mut().append_pair(p, c);
        }
        let req = self.client.request(self.method.clone(), url.clone());
        let req = authorize(req, self.auth.as_ref(), &self.method, &url, b"");
        let mut resp = req
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| PullError::Request(super::classify(e, self.timeout)))?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| PullError::Request(super::classify(e, self.timeout)))?
        {
            if body.len() + chunk.len() > MAX_PAGE_BYTES {
                return Err(PullError::TooLarge { url });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(PullError::Status {
                url: self.url.clone(),
                status,
                excerpt: crate::dispatch::failure::excerpt(&String::from_utf8_lossy(&body), 200),
            });
        }
        let page = match self.format {
            BodyFormat::Xml => read_xml_page(&body, self.next_cursor_field.as_deref()),
            _ => read_json_page(
                &body,
                self.items_field.as_deref(),
                self.next_cursor_field.as_deref(),
            ),
        }
        .map_err(|error| PullError::Unreadable {
            url: self.url.clone(),
            error,
        })?;
        let n = page.records.len();
        let moved = page.next.is_some() && page.next != cursor;
        let last = n.saturating_sub(1);
        let batch: Vec<_> = page
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let c = if i == last { page.next.clone() } else { None };
                self.intake.prepare(r, None, c)
            })
            .collect();
        let o = self.intake.commit(batch).await?;
        if n > 0 {
            tracing::info!(source = %source, records = n, stored = o.stored, already_stored = o.duplicates,
                messages = o.messages, quarantined = o.quarantined, "Page stored");
        }
        // A page without records that still moves the cursor (a system
        // serving a filtered view of its feed passed records that are not
        // ours): the cursor moves alone; the next page after the interval,
        // as for any page without records.
        if let (0, true, Some(next)) = (n, moved, &page.next) {
            self.intake.store().set_cursor(&source, next).await?;
        }
        Ok(n > 0 && moved)
    }
}

/// Reads a JSON page: records in `items_field` (or the body is an array),
/// the next cursor in `next_field` (a string or a number).
pub fn read_json_page(
    body: &[u8],
    items_field: Option<&str>,
    next_field: Option<&str>,
) -> Result<Page, PageError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| PageError::NotJson {
        error: e.to_string(),
        start: crate::dispatch::failure::excerpt(&String::from_utf8_lossy(body), 60),
    })?;
    let items = match (items_field, &v) {
        (Some(f), serde_json::Value::Object(o)) => match o.get(f) {
            Some(serde_json::Value::Array(a)) => a.clone(),
            Some(serde_json::Value::Null) | None => Vec::new(),
            Some(_) => return Err(PageError::NotArray(f.to_string())),
        },
        (None, serde_json::Value::Array(a)) => a.clone(),
        (Some(f), _) => return Err(PageError::NoItems(f.to_string())),
        (None, _) => return Err(PageError::NotRecords),
    };
    let next = next_field.and_then(|f| match v.get(f) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    });
    Ok(Page {
        records: items
            .iter()
            .map(|i| serde_json::to_vec(i).unwrap_or_default())
            .collect(),
        next,
    })
}

/// Reads an XML page: each child element of the root is one record (kept
/// as its own document), except the element named `next_field`, whose text
/// is the next cursor. Documents with a DTD are refused: no entity is ever
/// expanded.
pub fn read_xml_page(body: &[u8], next_field: Option<&str>) -> Result<Page, PageError> {
    let text = std::str::from_utf8(body).map_err(|e| PageError::NotUtf8(e.valid_up_to()))?;
    let mut r = quick_xml::Reader::from_str(text);
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut records = Vec::new();
    let mut next = None;
    let mut in_next = false;
    let mut saw_root = false;
    loop {
        let before = r.buffer_position() as usize;
        let ev = r.read_event().map_err(|e| PageError::Xml {
            at: r.error_position(),
            error: e.to_string(),
        })?;
        match ev {
            Event::DocType(_) => return Err(PageError::DocType),
            Event::Start(e) => {
                depth += 1;
                if depth == 1 {
                    saw_root = true;
                } else if depth == 2 {
                    start = before;
                    in_next = next_field.is_some_and(|f| e.local_name().as_ref() == f.as_bytes());
                }
            }
            Event::Empty(e) => {
                if depth == 0 {
                    saw_root = true;
                } else if depth == 1
                    && next_field.is_none_or(|f| e.local_name().as_ref() != f.as_bytes())
                {
                    records.push(text.as_bytes()[before..r.buffer_position() as usize].to_vec());
                }
            }
            Event::Text(t) if depth == 2 && in_next => {
                next = Some(
                    t.decode()
                        .map_err(|e| PageError::Cursor(e.to_string()))?
                        .trim()
                        .to_string(),
                );
            }
            Event::End(_) => {
                if depth == 2 {
                    if !in_next {
                        records.push(text.as_bytes()[start..r.buffer_position() as usize].to_vec());
                    }
                    in_next = false;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err(PageError::Truncated);
    }
    if !saw_root {
        return Err(PageError::NoRoot);
    }
    Ok(Page { records, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pages_give_records_and_cursor() {
        let p = read_json_page(
            br#"{"items":[{"a":1},{"a":"\u5f20"}],"next":42}"#,
            Some("items"),
            Some("next"),
        )
        .unwrap();
        assert_eq!(
            p.records,
            vec![br#"{"a":1}"#.to_vec(), "{\"a\":\"张\"}".as_bytes().to_vec()]
        );
        assert_eq!(p.next.as_deref(), Some("42"));
        let e = read_json_page(b"<html>oops</html>", Some("items"), None).unwrap_err();
        assert!(
            matches!(&e, PageError::NotJson { start, .. } if start.starts_with("<html>")),
            "{e}"
        );
        let e = read_json_page(br#"{"items":{}}"#, Some("items"), None).unwrap_err();
        assert_eq!(e, PageError::NotArray("items".into()));
        assert_eq!(e.to_string(), "`items` is not an array");
    }

    #[test]
    fn xml_pages_give_each_child_as_a_record() {
        let body = "<?xml version=\"1.0\"?><Results xmlns=\"urn:x\"><Result><Name>张三</Name></Result><Result><Name>李四</Name></Result><Next>c-2</Next></Results>";
        let p = read_xml_page(body.as_bytes(), Some("Next")).unwrap();
        assert_eq!(p.records.len(), 2);
        assert_eq!(
            p.records[1],
            "<Result><Name>李四</Name></Result>".as_bytes()
        );
        assert_eq!(p.next.as_deref(), Some("c-2"));
    }

    #[test]
    fn bad_xml_pages_are_refused_with_a_reason() {
        let e = read_xml_page(b"<Results><Result><Name>x</Name>", None).unwrap_err();
        assert!(
            matches!(e, PageError::Truncated | PageError::Xml { .. }),
            "{e}"
        );
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><Results><Result>&lol2;</Result></Results>"#;
        let e = read_xml_page(laughs.as_bytes(), None).unwrap_err();
        assert_eq!(e, PageError::DocType);
        let e = read_xml_page(&[0x3c, 0x61, 0xff, 0x3e], None).unwrap_err();
        assert_eq!(e, PageError::NotUtf8(2));
    }
}
