//! Bad input through a running hub: XML records with entity expansion
//! ("billion laughs"), truncated XML, non-UTF-8 bytes and JSON of the wrong
//! shape are each stored and quarantined with a reason that says what is
//! wrong, while the good records beside them are delivered and the hub
//! keeps running.

mod support;

use std::path::Path;
use std::time::Duration;
use support::hub::write;

fn config(dir: &Path) {
    write(
        dir,
        "tongban.toml",
        "[store]\nurl = \"sqlite://var/t.db\"\n",
    );
    write(
        dir,
        "schemas/Person.avsc",
        r#"{"type":"record","name":"Person","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"name","type":"string"}]}"#,
    );
    write(
        dir,
        "connectors/drop.toml",
        "kind = \"file\"\ndirectory = \"x\"\n\
         [operations.xml_in]\ndirection = \"source\"\nschema = \"Person\"\nformat = \"xml\"\nfile_pattern = \"*.xml\"\npoll_interval = \"50ms\"\n\
         [operations.json_in]\ndirection = \"source\"\nschema = \"Person\"\nfile_pattern = \"*.jsonl\"\npoll_interval = \"50ms\"\n\
         [operations.out]\ndirection = \"sink\"\nschema = \"Person\"\nfile_pattern = \"*.jsonl\"\n",
    );
    for (name, from) in [("xml", "drop.xml_in"), ("json", "drop.json_in")] {
        write(
            dir,
            &format!("mappings/{name}.toml"),
            &format!("from = \"{from}\"\nto = \"drop.out\"\nas = \"p\"\nkey = \"p.id\"\n[fields]\nid = \"p.id\"\nname = \"p.name\"\n"),
        );
    }
}

#[tokio::test]
async fn bad_records_are_quarantined_with_reasons_and_good_ones_go_on() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    config(dir);
    let inbox = dir.join("x/in");
    std::fs::create_dir_all(&inbox).unwrap();
    let xml = concat!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Person xmlns=\"urn:t\"><id>P-1</id><name>张三</name></Person>\n",
        "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\"><!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]>\n<Person><id>P-2</id><name>&lol3;</name></Person>\n",
        "<?xml version=\"1.0\"?>\n<Person><id>P-3</id><name>李",
    );
    tongban::connectors::file::write_with_checksum(&inbox, "a.xml", xml.as_bytes()).unwrap();
    let mut json = b"{\"id\":\"P-4\",\"name\":\"\xe7\x8e\x8b\xe4\xba\x94\"}\n".to_vec();
    json.extend_from_slice(b"{\"id\":\"P-5\",\"name\":\"\xff\xfe\"}\n");
    json.extend_from_slice(b"{\"id\":\"P-6\"}\n");
    json.extend_from_slice(b"[1,2,3]\n");
    json.extend_from_slice(b"{\"id\":\"P-7\",\"name\":\"\xe8\xb5\xb5\xe5\x85\xad\"}\n");
    tongban::connectors::file::write_with_checksum(&inbox, "b.jsonl", &json).unwrap();

    let mut child = support::tongban()
        .args(["run", "--config", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let store = tongban::store::Store::open("sqlite://var/t.db", dir)
        .await
        .unwrap();
    support::eventually(Duration::from_secs(30), "both files read", || async {
        inbox.join("done/a.xml").exists() && inbox.join("done/b.jsonl").exists()
    })
    .await;
    support::eventually(
        Duration::from_secs(30),
        "the good records delivered",
        || async {
            store
                .messages("drop.out", tongban::store::status::DELIVERED, 100)
                .await
                .unwrap()
                .len()
                >= 3
        },
    )
    .await;
    // Still running after all that.
    assert!(child.try_wait().unwrap().is_none(), "the hub stopped");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());

    let delivered = store
        .messages("drop.out", tongban::store::status::DELIVERED, 100)
        .await
        .unwrap();
    let keys: std::collections::BTreeSet<&str> = delivered.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["P-1", "P-4", "P-7"]);
    let name = String::from_utf8(
        delivered
            .iter()
            .find(|m| m.key == "P-1")
            .unwrap()
            .payload
            .clone(),
    )
    .unwrap();
    assert!(name.contains("张三"), "{name}");

    let xml_q = store.quarantine("drop.xml_in").await.unwrap();
    let reasons: Vec<&str> = xml_q.iter().map(|q| q.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("unknown entity &lol3;")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not closed")),
        "{reasons:?}"
    );
    let json_q = store.quarantine("drop.json_in").await.unwrap();
    let reasons: Vec<&str> = json_q.iter().map(|q| q.reason.as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("`name`: invalid unicode")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("missing required field")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("found a list")),
        "{reasons:?}"
    );
    // Every record, good or bad, is kept: nothing is lost.
    assert_eq!(store.inbox_len().await.unwrap(), 8);
}
