//! Cross-province (跨省通办) between two provincial hubs, on both stores:
//! Shanxi (14) and Shandong (37), each with its own store and its own
//! platform, card, subsidies and bank systems, against one national
//! certificate system that serves each province its own events. A person
//! of Shanxi is issued a certificate there and paid there from the month of
//! issue; the household moves to Zichuan (淄川, 370302) and the person
//! files the migration (迁移) on Shandong's platform. Shanxi unloads its
//! card and stops the subsidies from the month after the move, Shandong
//! loads its card and pays from the month after: across the two provinces
//! each month is paid once, none is missed. A re-assessment afterwards
//! reaches Shandong only, and Shanxi's hub never hears the Shandong
//! application. A second person of Shanxi, living in Zichuan with a
//! residence permit (居住证), applies there (跨省通办): Shandong's hub sends
//! the application and follows its steps and deadlines, Shanxi (the
//! household province) issues the certificate, loads its card and pays,
//! and the applicant hears the decision on Shandong's platform.

mod support;

use std::time::Duration;
use support::chain::Chain;

/// The person's payments on a province's list for a month: (type, amount,
/// certificate, account).
fn paid(chain: &Chain, period: &str, id: &str) -> Vec<(String, i64, String, String)> {
    let mut out: Vec<_> = chain
        .sims
        .subsidies
        .payout_list(period)
        .into_iter()
        .filter(|v| v["holder_id"] == id)
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
            (
                s("subsidy_type"),
                v["amount_fen"].as_i64().unwrap_or(0),
                s("certificate_no"),
                s("bank_account_no"),
            )
        })
        .collect();
    out.sort();
    out
}

fn payments(
    cert: &str,
    account: &str,
    living: i64,
    care: i64,
) -> Vec<(String, i64, String, String)> {
    let mut out = Vec::new();
    if care > 0 {
        out.push(("CARE".into(), care, cert.into(), account.into()));
    }
    if living > 0 {
        out.push(("LIVING".into(), living, cert.into(), account.into()));
    }
    out
}

use support::until;

/// The next synthetic person whose household is in Shanxi (14).
fn person_of_shanxi(rng: &mut tongban::synth::Rng) -> tongban::synth::Person {
    std::iter::repeat_with(|| tongban::synth::person(rng))
        .find(|p| p.region.starts_with("14"))
        .unwrap()
}

/// Effects of `kind` a simulator recorded for the person.
fn effects(common: &tongban::sim::Common, kind: &str, id: &str) -> Vec<String> {
    common
        .effects(kind)
        .into_iter()
        .filter(|e| e.subject() == id)
        .map(|e| e.detail().to_string())
        .collect()
}

async fn scenario(stores: [Option<String>; 2]) {
    let [a_store, b_store] = stores;
    let shanxi = support::chain::start_in(a_store, Some("14"), None).await;
    let shandong = support::chain::start_in(b_store, Some("37"), Some(shanxi.national())).await;

    // A person of Taiyuan (140105): physical disability, level 2, needing
    // care, in a 低保 household.
    let mut rng = tongban::synth::Rng::new(11);
    let p = person_of_shanxi(&mut rng);
    let id = p.id.clone();
    let cert = format!("{id}42");
    shanxi.sims.cert.assess(&id, 4, 2);
    shanxi.sims.sscard.issue_card(&id);
    shanxi.sims.platform.file(&support::chain::form(
        "SX-MOVE-1",
        "NEW",
        &p,
        None,
        serde_json::json!({}),
    ));

    let (this, next) = support::chain::this_and_next_month();
    let sx_account = shanxi.sims.sscard.account_of(&id).0;
    until("the certificate issued, loaded and paid in Shanxi", || {
        shanxi.sims.sscard.loaded_on(&id).as_deref() == Some(cert.as_str())
            && paid(&shanxi, &next, &id).len() == 2
    })
    .await;
    let in_shanxi = payments(&cert, &sx_account, 41_000, 15_000);
    assert_eq!(paid(&shanxi, &this, &id), in_shanxi);
    assert_eq!(paid(&shanxi, &next, &id), in_shanxi);
    assert!(paid(&shandong, &this, &id).is_empty());
    assert!(
        shandong.sims.sscard.loaded_on(&id).is_none(),
        "Shandong's hub does not act on a Shanxi certificate"
    );

    // The household moves to Zichuan; the person gets Shandong's card and
    // files the migration on Shandong's platform.
    // (A card of a Shandong bank: its account is not the Shanxi one.)
    let sd_account = tongban::synth::luhn_complete("622848061234567890");
    shandong
        .sims
        .sscard
        .issue_card_with_account(&id, &sd_account, "103465000015");
    assert_ne!(sd_account, sx_account);
    let mut moved = p.clone();
    moved.region = "370302".into();
    shandong.sims.platform.file(&support::chain::form(
        "SD-MOVE-1",
        "MIGRATE",
        &moved,
        Some(&cert),
        serde_json::json!({"target_region_code": "370302"}),
    ));
    until(
        "Shanxi unloads its card and stops; Shandong loads its card and pays",
        || {
            shanxi.sims.sscard.loaded_on(&id).is_none()
                && paid(&shanxi, &next, &id).is_empty()
                && shandong.sims.sscard.loaded_on(&id).as_deref() == Some(cert.as_str())
                && paid(&shandong, &next, &id).len() == 2
        },
    )
    .await;
    // The month of the move is Shanxi's, the months after are Shandong's,
    // paid to the account of Shandong's card.
    assert_eq!(
        paid(&shanxi, &this, &id),
        in_shanxi,
        "the month of the move"
    );
    assert!(
        paid(&shandong, &this, &id).is_empty(),
        "no month paid twice"
    );
    assert_eq!(
        paid(&shandong, &next, &id),
        payments(&cert, &sd_account, 41_000, 15_000),
        "no month missed"
    );
    assert_eq!(
        effects(&shanxi.sims.subsidies.common, "stop", &id),
        [format!("from {next} (MOVED_AWAY)")]
    );
    let function = shandong.sims.sscard.certificate_function(&id).unwrap();
    assert_eq!(function.0, cert, "the certificate keeps its number");
    // The applicant hears it on the platform applied on; Shanxi's platform
    // never sees Shandong's application.
    let reported = |chain: &Chain| effects(&chain.sims.platform.common, "status", "SD-MOVE-1");
    until("the migration reported on Shandong's platform", || {
        reported(&shandong).contains(&"CERTIFICATE_CHANGED".to_string())
    })
    .await;
    assert!(reported(&shanxi).is_empty());
    let granted = format!(
        "SUBSIDIES SUBSIDY_GRANTED: 两项补贴已批准 subsidies granted: 生活补贴 living ¥410.00, 护理补贴 care ¥150.00 a month from {next}"
    );
    until(
        "Shandong's subsidies decision reaches the applicant",
        || shandong.sims.platform.feedback("SD-MOVE-1") == [granted.clone()],
    )
    .await;

    // Re-assessed at level 3 in Shandong: only Shandong acts.
    let sx_loads = effects(&shanxi.sims.sscard.common, "card_loaded", &id).len();
    shandong
        .sims
        .cert
        .act(
            &id,
            tongban::sim::cert::Action::Reassess {
                category: 4,
                level: 3,
            },
        )
        .unwrap();
    let level3 = format!("{id}43");
    until("the re-assessment reaches Shandong's card and list", || {
        shandong.sims.sscard.loaded_on(&id).as_deref() == Some(level3.as_str())
            && paid(&shandong, &next, &id) == payments(&level3, &sd_account, 41_000, 0)
    })
    .await;
    // Shanxi's hub was told nothing: give it the time it took Shandong.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        effects(&shanxi.sims.sscard.common, "card_loaded", &id).len(),
        sx_loads
    );
    assert!(shanxi.sims.sscard.loaded_on(&id).is_none());
    assert!(paid(&shanxi, &next, &id).is_empty());
    // Nothing failed on either side (the Shanxi card was unloaded once,
    // the Shandong one loaded: nothing refused as someone else's).
    for chain in [&shanxi, &shandong] {
        let counts = chain.store.counts().await.unwrap();
        let dead: Vec<_> = counts
            .messages
            .iter()
            .filter(|c| c.status == tongban::store::Status::Dead && c.messages > 0)
            .collect();
        assert!(dead.is_empty(), "{dead:?}");
    }

    applied_where_the_person_lives(&shanxi, &shandong, &mut rng, &this).await;

    shanxi.hub.stop().await;
    shandong.hub.stop().await;
}

/// 跨省通办: filed in the province of residence, issued and paid by the
/// province of the household registration.
async fn applied_where_the_person_lives(
    shanxi: &Chain,
    shandong: &Chain,
    rng: &mut tongban::synth::Rng,
    this: &str,
) {
    let p = person_of_shanxi(rng);
    let id = p.id.clone();
    let cert = format!("{id}41");
    shanxi.sims.cert.assess(&id, 4, 1);
    shanxi.sims.sscard.issue_card(&id);
    let form = |app: &str, permit: Option<&str>| {
        support::chain::form(
            app,
            "NEW",
            &p,
            None,
            serde_json::json!({"applicant": {
                "id_no": p.id, "name": p.name, "phone": "13800000000",
                "region_code": p.region, "address": null,
                "residence_region_code": "370302", "residence_permit_no": permit,
            }, "needs_long_term_care": false}),
        )
    };
    // Without the residence permit the form goes no further: quarantined
    // in Shandong with the reason, nothing sent to the national system.
    let before = shanxi.sims.cert.events();
    shandong.sims.platform.file(&form("SD-LIVE-0", None));
    support::eventually(Duration::from_secs(60), "the form quarantined", || async {
        let q = shandong.store.counts().await.unwrap().quarantined;
        q.iter().map(|c| c.records).sum::<i64>() == 1
    })
    .await;
    shandong
        .sims
        .platform
        .file(&form("SD-LIVE-1", Some("370302202400012345")));
    until("issued in Shanxi, loaded and paid there", || {
        shanxi.sims.sscard.loaded_on(&id).as_deref() == Some(cert.as_str())
            && paid(shanxi, this, &id).len() == 1
    })
    .await;
    assert_eq!(
        shanxi.sims.cert.events(),
        before + 1,
        "one certificate issued"
    );
    let account = shanxi.sims.sscard.account_of(&id).0;
    assert_eq!(
        paid(shanxi, this, &id),
        payments(&cert, &account, 41_000, 0),
        "paid by the household province from the month of issue"
    );
    assert!(paid(shandong, this, &id).is_empty());
    assert!(shandong.sims.sscard.loaded_on(&id).is_none());
    // The applicant hears it where they applied; Shanxi's platform hears
    // nothing of a form it never had.
    let reported = |chain: &Chain| effects(&chain.sims.platform.common, "status", "SD-LIVE-1");
    until("the certificate reported on Shandong's platform", || {
        reported(shandong).contains(&"CERTIFICATE_ISSUED".to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(reported(shanxi).is_empty());
    // Shandong, where it was filed, follows its steps to the decision;
    // Shanxi's register has none of them.
    let stages = |chain: &Chain| {
        let store = chain.store.clone();
        async move {
            store
                .application_stages("SD-LIVE-1")
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.stage)
                .collect::<Vec<_>>()
        }
    };
    support::eventually(
        Duration::from_secs(60),
        "the steps in Shandong's register",
        || {
            let f = stages(shandong);
            async move { f.await.last().map(String::as_str) == Some("DECIDED") }
        },
    )
    .await;
    assert!(stages(shanxi).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_migrated_between_two_provinces_is_paid_once_every_month_sqlite() {
    scenario([None, None]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_migrated_between_two_provinces_is_paid_once_every_month_postgres() {
    scenario([
        Some(support::pg::database().await),
        Some(support::pg::database().await),
    ])
    .await;
}
