//! How HTTP push answers are sorted, against a real server on 127.0.0.1:
//! a request that hangs past the timeout, 500 and 429 (with its
//! Retry-After) are transient; 422 is permanent with the reason kept. And
//! an XML record placed in a configured envelope arrives as one document.

mod support;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use std::time::Duration;
use tongban::connectors::http::HttpSink;
use tongban::dispatch::failure::{Class, DeliveryError};
use tongban::dispatch::Sink;
use tongban::store::Claimed;

fn message() -> Claimed {
    Claimed {
        id: 1,
        target: "t.op".into(),
        key: "K".into(),
        idem_key: "00112233445566778899aabbccddeeff".into(),
        payload: r#"{"name":"张三","level":1}"#.as_bytes().to_vec(),
        attempts: 0,
        lease: 1,
    }
}

/// Bodies the `/echo` route received.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

async fn server() -> (String, Seen) {
    let seen: Seen = Default::default();
    let s = seen.clone();
    let app = Router::new()
        .route(
            "/hang",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/boom",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "db down") }),
        )
        .route(
            "/busy",
            post(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "7")],
                    "slow down",
                )
            }),
        )
        .route(
            "/refuse",
            post(|| async {
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown person 110105199003070017",
                )
            }),
        )
        .route("/endless", post(|| async { endless(StatusCode::OK) }))
        .route(
            "/endless_error",
            post(|| async { endless(StatusCode::SERVICE_UNAVAILABLE) }),
        )
        .route(
            "/echo",
            post(move |body: String| async move {
                s.lock().unwrap().push(body);
                "ok"
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, seen)
}

/// Bytes the endless answers have sent.
static SENT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An answer of 1 GB, made as it is sent (64 KiB pieces).
fn endless(status: StatusCode) -> (StatusCode, axum::body::Body) {
    let piece = axum::body::Bytes::from(vec![b'x'; 64 << 10]);
    let stream = futures::stream::iter(0..(1usize << 30) / (64 << 10)).map(move |_| {
        SENT.fetch_add(piece.len(), std::sync::atomic::Ordering::Relaxed);
        Ok::<_, std::io::Error>(piece.clone())
    });
    (status, axum::body::Body::from_stream(stream))
}

async fn push(url: &str, path: &str) -> DeliveryError {
    HttpSink::new(&format!("{url}{path}"), "POST", Duration::from_millis(300))
        .unwrap()
        .deliver(&message())
        .await
        .unwrap_err()
}

#[tokio::test]
async fn timeouts_5xx_and_429_are_transient_and_422_is_permanent() {
    let (url, _) = server().await;
    let e = push(&url, "/hang").await;
    assert!(matches!(e, DeliveryError::Timeout(_)), "{e:?}");
    assert_eq!(e.class(), Class::Transient);
    let e = push(&url, "/boom").await;
    assert_eq!((e.status(), e.class()), (Some(500), Class::Transient));
    let e = push(&url, "/busy").await;
    assert_eq!((e.status(), e.class()), (Some(429), Class::Transient));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    let e = push(&url, "/refuse").await;
    assert_eq!((e.status(), e.class()), (Some(422), Class::Permanent));
    // The reason is kept, with the ID number masked.
    assert_eq!(
        e.to_string(),
        "the target answered HTTP 422: unknown person 110105********0017"
    );
    // Nothing listening: a connect error, transient.
    let e = push("http://127.0.0.1:9", "/x").await;
    assert_eq!(e.class(), Class::Transient, "{e:?}");
}

#[tokio::test]
async fn xml_records_go_inside_the_configured_envelope() {
    let (url, seen) = server().await;
    let sink = HttpSink::new(&format!("{url}/echo"), "POST", Duration::from_secs(5))
        .unwrap()
        .with_xml("CardLoad", Some("urn:cn:sscard:1"))
        .with_xml_envelope(Some(
            "<Request xmlns=\"urn:cn:gateway\"><Head><MsgId>{idempotency_key}</MsgId></Head><Body>{record}</Body></Request>",
        ));
    let d = sink.deliver(&message()).await.unwrap();
    assert_eq!(d.status_code, Some(200));
    let body = seen.lock().unwrap()[0].clone();
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Request xmlns=\"urn:cn:gateway\"><Head><MsgId>00112233445566778899aabbccddeeff</MsgId></Head><Body><CardLoad xmlns=\"urn:cn:sscard:1\"><name>张三</name><level>1</level></CardLoad></Body></Request>"
    );
    assert_eq!(body.matches("<?xml").count(), 1, "one declaration");
}

/// A target that answers with a body of 1 GB: read no further than 1 MiB,
/// at once; accepted is delivered (the answer's digest over what was
/// read), refused is an error with an excerpt of its start.
#[tokio::test]
async fn an_answer_of_a_gigabyte_is_read_no_further_than_a_mebibyte() {
    use std::sync::atomic::Ordering;
    let (url, _) = server().await;
    let sink = HttpSink::new(&format!("{url}/endless"), "POST", Duration::from_secs(30)).unwrap();
    let started = std::time::Instant::now();
    let d = sink.deliver(&message()).await.unwrap();
    assert_eq!(d.status_code, Some(200));
    assert_eq!(
        d.excerpt.as_deref(),
        Some("the answer was longer than 1 MiB: read no further")
    );
    let want = tongban::store::evidence::sha256_hex(&vec![b'x'; 1 << 20]);
    assert_eq!(d.response_sha256.as_deref(), Some(want.as_str()));
    let e = HttpSink::new(
        &format!("{url}/endless_error"),
        "POST",
        Duration::from_secs(30),
    )
    .unwrap()
    .deliver(&message())
    .await
    .unwrap_err();
    assert_eq!((e.status(), e.class()), (Some(503), Class::Transient));
    assert!(e.to_string().contains("xxxxxxxx"), "{e}");
    // Both at once, not after a gigabyte: what was sent is what fits in
    // the read and the sockets' buffers.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = SENT.load(Ordering::Relaxed);
    assert!(
        sent < 64 << 20,
        "{} MiB sent: the answer was read on",
        sent >> 20
    );
}
