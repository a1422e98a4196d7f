//! HMAC-signed pushes, checked by a real HTTP server on 127.0.0.1 that
//! recomputes the signature on its own (hmac + sm3/sha2 directly, its own
//! string to sign): the right secret is accepted, a wrong one is refused
//! and classified permanent, and a custom recipe (header names, template,
//! base64) is followed.

use axum::{body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post, Router};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tongban::config::connector::MacAlgorithm;
use tongban::connectors::http::sign::{Encoding, Signer};
use tongban::connectors::http::{HttpAuth, HttpSink};
use tongban::dispatch::failure::Class;
use tongban::dispatch::Sink;
use tongban::store::Claimed;

const SECRET: &[u8] = b"s3cret-from-the-platform";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What the server expects: SM3 recipe with default headers, or the
/// SHA-256 "platform B" recipe with its own headers and base64.
#[derive(Clone, Copy)]
enum Recipe {
    Sm3Default,
    Sha256Custom,
}

struct Server {
    recipe: Recipe,
    nonces: Mutex<Vec<String>>,
}

async fn handle(State(s): State<Arc<Server>>, h: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let get = |n: &str| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let path = "/api/cert/v3/applications?v=3";
    let ok = match s.recipe {
        Recipe::Sm3Default => {
            let (ts, nonce) = (get("x-timestamp"), get("x-nonce"));
            let digest = hex(&sm3::Sm3::digest(&body));
            let sts = format!("POST\n{path}\n{ts}\n{nonce}\n{digest}");
            let mut m = <Hmac<sm3::Sm3> as Mac>::new_from_slice(SECRET).unwrap();
            m.update(sts.as_bytes());
            s.nonces.lock().unwrap().push(nonce);
            get("x-app-key") == "tongban-hub"
                && get("x-signature") == hex(&m.finalize().into_bytes())
                && ts
                    .parse::<i64>()
                    .is_ok_and(|t| (t - tongban::store::now_ms()).abs() < 60_000)
        }
        Recipe::Sha256Custom => {
            let (ts, nonce) = (get("timestamp"), get("nonce"));
            let sts = format!("appKey={}&timestamp={ts}&nonce={nonce}", get("appkey"));
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(SECRET).unwrap();
            m.update(sts.as_bytes());
            let want = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
            s.nonces.lock().unwrap().push(nonce);
            get("sign") == want
        }
    };
    if ok {
        (StatusCode::OK, "accepted".into())
    } else {
        (StatusCode::UNAUTHORIZED, "signature refused".into())
    }
}

async fn server(recipe: Recipe) -> (Arc<Server>, String) {
    let s = Arc::new(Server {
        recipe,
        nonces: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/api/cert/v3/applications", post(handle))
        .with_state(s.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/api/cert/v3/applications?v=3",
        l.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(l, app).await });
    (s, url)
}

fn message() -> Claimed {
    Claimed {
        id: 1,
        target: "national_cert.submit_application".into(),
        key: "k".into(),
        idem_key: "abc".into(),
        payload: r#"{"name":"张三","kind":"new"}"#.as_bytes().to_vec(),
        attempts: 0,
        lease: 1,
    }
}

fn sink(url: &str, signer: Signer) -> HttpSink {
    HttpSink::new(url, "POST", Duration::from_secs(5))
        .unwrap()
        .with_auth(Some(HttpAuth::Hmac(signer)))
}

#[tokio::test]
async fn hmac_sm3_signatures_are_verified_by_the_server() {
    let (srv, url) = server(Recipe::Sm3Default).await;
    let good = sink(
        &url,
        Signer::new("tongban-hub", SECRET, MacAlgorithm::HmacSm3),
    );
    let m = message();
    good.deliver(&m)
        .await
        .expect("the right secret is accepted");
    good.deliver(&m).await.expect("and again, with a new nonce");
    let n = srv.nonces.lock().unwrap().clone();
    assert_eq!(n.len(), 2);
    assert_ne!(n[0], n[1], "each request has a fresh nonce");
    assert_eq!(n[0].len(), 32);

    let bad = sink(
        &url,
        Signer::new("tongban-hub", b"wrong", MacAlgorithm::HmacSm3),
    );
    let e = bad.deliver(&m).await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert_eq!(
        e.class(),
        Class::Permanent,
        "a refused signature is not retried"
    );
    assert!(e.to_string().contains("signature refused"), "{e}");

    // SHA-256 where the server wants SM3: refused.
    let wrong_alg = sink(
        &url,
        Signer::new("tongban-hub", SECRET, MacAlgorithm::HmacSha256),
    );
    assert_eq!(wrong_alg.deliver(&m).await.unwrap_err().status(), Some(401));
}

#[tokio::test]
async fn a_custom_recipe_is_followed() {
    let (_srv, url) = server(Recipe::Sha256Custom).await;
    let mut s = Signer::new("platform-b", SECRET, MacAlgorithm::HmacSha256);
    s.template = "appKey={app_key}&timestamp={timestamp}&nonce={nonce}".into();
    s.encoding = Encoding::Base64;
    s.headers.app_key = "appKey".into();
    s.headers.timestamp = "timestamp".into();
    s.headers.nonce = "nonce".into();
    s.headers.signature = "sign".into();
    sink(&url, s.clone())
        .deliver(&message())
        .await
        .expect("custom recipe accepted");
    s.encoding = Encoding::Hex;
    assert_eq!(
        sink(&url, s)
            .deliver(&message())
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
}

/// The recipe from a connector file: parsed, secret resolved, then used.
#[test]
fn the_recipe_comes_from_connector_configuration() {
    let toml = r#"
app_key = "platform-b"
secret = "${env:TONGBAN_TEST_HMAC_SECRET}"
algorithm = "hmac-sha256"
string_to_sign = "appKey={app_key}&timestamp={timestamp}&nonce={nonce}"
encoding = "base64"
app_key_header = "appKey"
signature_header = "sign"
"#;
    std::env::set_var("TONGBAN_TEST_HMAC_SECRET", "s3cret-from-the-platform");
    let a: tongban::config::connector::HmacAuth = toml::from_str(toml).unwrap();
    let s = Signer::from_recipe(&a).unwrap();
    assert_eq!(s.headers.app_key, "appKey");
    assert_eq!(s.headers.signature, "sign");
    assert_eq!(
        s.headers.nonce, "X-Nonce",
        "unset headers keep their defaults"
    );
    assert_eq!(s.encoding, Encoding::Base64);
    let sig = s.signature("POST", "/p", "1", "n", b"");
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(SECRET).unwrap();
    m.update(b"appKey=platform-b&timestamp=1&nonce=n");
    assert_eq!(
        sig,
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    );
    let bad: tongban::config::connector::HmacAuth =
        toml::from_str(&toml.replace("\"base64\"", "\"base32\"")).unwrap();
    let e = Signer::from_recipe(&bad).unwrap_err();
    assert!(
        matches!(&e, tongban::connectors::BuildError::Encoding(enc) if enc == "base32"),
        "{e}"
    );
}
