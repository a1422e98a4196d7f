//! XML bodies over HTTP: a record goes out as an XML document with its
//! namespace and Chinese text intact, and a real server on 127.0.0.1 reads
//! it back (with quick-xml, namespace-aware) to the same values.

use axum::{body::Bytes, extract::State, http::HeaderMap, routing::post, Router};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tongban::connectors::http::HttpSink;
use tongban::dispatch::Sink;
use tongban::store::Claimed;

type Seen = Arc<Mutex<Vec<(String, Vec<(String, String, String)>)>>>;

/// Records the content type and every (namespace, element, text) leaf.
async fn handle(State(seen): State<Seen>, h: HeaderMap, body: Bytes) -> &'static str {
    let ct = h
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = std::str::from_utf8(&body).expect("UTF-8 body");
    let mut r = NsReader::from_str(text);
    let mut leaves = Vec::new();
    let mut current: Option<(String, String)> = None;
    loop {
        match r.read_resolved_event().expect("well-formed XML") {
            (ResolveResult::Bound(ns), Event::Start(e)) => {
                current = Some((
                    String::from_utf8_lossy(ns.as_ref()).into_owned(),
                    String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                ))
            }
            (_, Event::Text(t)) => {
                if let Some((ns, name)) = current.take() {
                    let raw = t.decode().unwrap().into_owned();
                    leaves.push((
                        ns,
                        name,
                        quick_xml::escape::unescape(&raw).unwrap().into_owned(),
                    ));
                }
            }
            (_, Event::End(_)) => current = None,
            (_, Event::Eof) => break,
            _ => {}
        }
    }
    seen.lock().unwrap().push((ct, leaves));
    "ok"
}

#[tokio::test]
async fn records_go_out_as_namespaced_xml_with_chinese_text() {
    let seen: Seen = Default::default();
    let app = Router::new()
        .route("/card/load", post(handle))
        .with_state(seen.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/card/load", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });

    let sink = HttpSink::new(&url, "POST", Duration::from_secs(5))
        .unwrap()
        .with_xml("CardLoadRequest", Some("urn:mohrss:sscard:v2"));
    let m = Claimed {
        id: 1,
        target: "sscard.load_certificate".into(),
        key: "k".into(),
        idem_key: "abc".into(),
        payload:
            r#"{"name":"欧阳娜娜","cert_no":"11010519491231002X11","amount_fen":30000,"note":null}"#
                .as_bytes()
                .to_vec(),
        attempts: 0,
        lease: 1,
    };
    sink.deliver(&m).await.expect("accepted");
    let seen = seen.lock().unwrap().clone();
    let (ct, leaves) = &seen[0];
    assert_eq!(ct, "application/xml; charset=utf-8");
    let ns = "urn:mohrss:sscard:v2".to_string();
    assert_eq!(
        leaves,
        &vec![
            (ns.clone(), "name".into(), "欧阳娜娜".into()),
            (ns.clone(), "cert_no".into(), "11010519491231002X11".into()),
            (ns.clone(), "amount_fen".into(), "30000".into()),
        ]
    );

    // A payload that is not a JSON record cannot become a document: the
    // request is not made, and the failure is ours, permanent.
    let bad = Claimed {
        payload: b"[1,2]".to_vec(),
        ..m
    };
    let e = sink.deliver(&bad).await.unwrap_err();
    assert_eq!(
        e.class(),
        tongban::dispatch::failure::Class::Permanent,
        "{e}"
    );
}
