//! HTTPS to a server on 127.0.0.1 whose certificate is signed by a
//! private CA (as government networks use), and which wants a client
//! certificate (mutual TLS): without the CA the hub refuses the server;
//! with the CA but without a client certificate the server refuses the
//! hub; with both the delivery goes through.

mod support;

use axum::{routing::post, Router};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tongban::connectors::http::{HttpSink, Tls};
use tongban::dispatch::Sink;
use tongban::store::Claimed;

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "tongban test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca.pem(),
        server: leaf(vec!["localhost".into(), "127.0.0.1".into()]),
        client: leaf(vec!["tongban-hub".into()]),
    }
}

/// Starts the server; returns its hit counter, URL and address.
async fn server(p: &Pki) -> (Arc<AtomicU64>, String, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(p.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(p.server.0.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(p.server.1.as_bytes()).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let app = Router::new().route(
        "/deliver",
        post(move || {
            h.fetch_add(1, Ordering::SeqCst);
            async { "ok" }
        }),
    );
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(cfg));
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(l, tls)
            .unwrap()
            .serve(app.into_make_service())
            .await
    });
    (
        hits,
        format!("https://localhost:{}/deliver", addr.port()),
        addr.to_string(),
    )
}

fn message() -> Claimed {
    Claimed {
        id: 1,
        target: "t.deliver".into(),
        key: "K".into(),
        idem_key: "0123456789abcdef0123456789abcdef".into(),
        payload: r#"{"name":"张三"}"#.as_bytes().to_vec(),
        attempts: 0,
        lease: 1,
    }
}

#[tokio::test]
async fn a_private_ca_and_a_client_certificate_are_used() {
    let p = pki();
    let (hits, url, addr) = server(&p).await;
    support::listening(&addr, Duration::from_secs(10)).await;
    let m = message();

    // The system's roots do not know the private CA.
    let sink = HttpSink::new(&url, "POST", Duration::from_secs(5)).unwrap();
    let e = sink.deliver(&m).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    // The CA, but no client certificate: the server refuses the handshake.
    let with_ca = Tls {
        ca_pem: Some(p.ca_pem.clone().into_bytes()),
        identity_pem: None,
    };
    let sink = HttpSink::new(&url, "POST", Duration::from_secs(5))
        .unwrap()
        .with_tls(&with_ca)
        .unwrap();
    assert!(
        sink.deliver(&m).await.is_err(),
        "mutual TLS must be required"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // Both: delivered.
    let both = Tls {
        ca_pem: Some(p.ca_pem.clone().into_bytes()),
        identity_pem: Some(format!("{}\n{}", p.client.0, p.client.1).into_bytes()),
    };
    let sink = HttpSink::new(&url, "POST", Duration::from_secs(5))
        .unwrap()
        .with_tls(&both)
        .unwrap();
    let d = sink.deliver(&m).await.unwrap();
    assert_eq!(d.status_code, Some(200));
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A CA file that is not PEM is a clear configuration error.
    let bad = Tls {
        ca_pem: Some(b"not a certificate".to_vec()),
        identity_pem: None,
    };
    let e = HttpSink::new(&url, "POST", Duration::from_secs(5))
        .unwrap()
        .with_tls(&bad)
        .err()
        .unwrap();
    assert!(
        matches!(e, tongban::connectors::BuildError::NoCaCertificate),
        "{e}"
    );
    assert!(e.to_string().contains("ca_file"), "{e}");
}
