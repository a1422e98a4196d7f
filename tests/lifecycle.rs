//! A certificate's life after issuance, through the running hub and the
//! simulated systems, on both stores: a freeze stops the subsidies from the
//! next month and unloads the card; an unfreeze loads it again and resumes
//! them from the next month; re-assessments (a level, then a category)
//! reload the card with the new certificate and decide the subsidies again
//! from the next month; a reissue (B1) is paid against its new number at
//! once; a damaged certificate is renewed at once with its validity kept,
//! an early renewal for expiry refused; a death stops everything from the
//! next month. A second person's
//! household leaves 低保 (civil affairs: no living subsidy from the next
//! month), then the person's death is registered (public security) before
//! the certificate system knows: the subsidies stop at once, the hub asks
//! for the cancellation, the card is unloaded, and the cancellation's own
//! stop is the same effect, not applied twice. A third person, who has
//! held a certificate for years, applies for subsidies, pension and work
//! alone and gets them without a certificate request (paid, as everyone
//! here, to the account of their social security card); a fourth, with a
//! multiple disability at level 3 that includes an intellectual one, is
//! refused without a guardian (监护人) and, through one, gets the care
//! subsidy's extension; a fifth, whose assessment fails, hears
//! the refusal and its reason on the platform. Each step is checked on the
//! payout lists of this month and the next, to the fen, and on the card.

mod support;

use std::time::Duration;
use tongban::demo::scenario::Sims;
use tongban::sim::cert::Action;

/// The person's payments on a month's list: (type, amount, certificate).
fn paid(sims: &Sims, period: &str, id: &str) -> Vec<(String, i64, String)> {
    let mut out: Vec<(String, i64, String)> = sims
        .subsidies
        .payout_list(period)
        .into_iter()
        .filter(|v| v["holder_id"] == id)
        .map(|v| {
            (
                v["subsidy_type"].as_str().unwrap_or("").to_string(),
                v["amount_fen"].as_i64().unwrap_or(0),
                v["certificate_no"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn payments(cert: &str, living: i64, care: i64) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    if care > 0 {
        out.push(("CARE".to_string(), care, cert.to_string()));
    }
    if living > 0 {
        out.push(("LIVING".to_string(), living, cert.to_string()));
    }
    out
}

use support::until;

async fn scenario(store_url: Option<String>) {
    // The configuration directory lives as long as the test.
    let support::chain::Chain {
        sims,
        dir: _dir,
        cfg: _,
        store,
        hub,
    } = support::chain::start(store_url).await;

    // A physical disability, level 2, needing long-term care, in a 低保
    // household: living and care subsidy from the month of issue.
    let people = support::ops::people();
    let p = &people[0];
    let id = p.id.clone();
    sims.cert.assess(&id, 4, 2);
    sims.sscard.issue_card(&id);
    let form1 = |app: &str, request: &str, cert: Option<&str>| {
        support::chain::form(app, request, p, cert, serde_json::json!({}))
    };
    sims.platform.file(&form1("SX-LIFE-1", "NEW", None));

    let now = tongban::domain::china_now().date_naive();
    let (this, next) = support::chain::this_and_next_month();
    let first = format!("{id}42");
    let card = || sims.sscard.loaded_on(&id);

    until("the certificate issued, loaded and paid", || {
        card().as_deref() == Some(first.as_str()) && paid(&sims, &next, &id).len() == 2
    })
    .await;
    let issued = payments(&first, 41_000, 15_000);
    // Paid through the card: to the account the card system reported on
    // the load, not the one the form gave.
    let card_account = sims.sscard.account_of(&id).0;
    assert_ne!(card_account, p.card);
    for v in sims.subsidies.payout_list(&this) {
        if v["holder_id"] == id {
            assert_eq!(v["bank_account_no"], card_account.as_str(), "{v}");
            assert_eq!(v["account_source"], "SSCARD");
        }
    }
    assert_eq!(
        paid(&sims, &this, &id),
        issued,
        "paid from the month of issue"
    );
    assert_eq!(paid(&sims, &next, &id), issued);
    // The subsidies department's decision goes back to the applicant.
    let granted = format!(
        "SUBSIDIES SUBSIDY_GRANTED: 两项补贴已批准 subsidies granted: 生活补贴 living ¥410.00, 护理补贴 care ¥150.00 a month from {this}"
    );
    until("the subsidies decision reaches the applicant", || {
        sims.platform.feedback("SX-LIFE-1") == [granted.clone()]
    })
    .await;

    // Frozen: nothing from next month, this month's payments stand.
    sims.cert.act(&id, Action::Freeze).unwrap();
    until("the freeze reaches the card and the subsidies", || {
        card().is_none() && paid(&sims, &next, &id).is_empty()
    })
    .await;
    assert_eq!(
        paid(&sims, &this, &id),
        issued,
        "a stop is from the next month"
    );

    // Unfrozen: loaded again, resumed from next month: no month missed.
    sims.cert.act(&id, Action::Unfreeze).unwrap();
    until("the unfreeze reaches the card and the subsidies", || {
        card().as_deref() == Some(first.as_str()) && paid(&sims, &next, &id) == issued
    })
    .await;

    // Re-assessed as level 3: no care subsidy from next month, living
    // subsidy kept; the card carries the new certificate.
    sims.cert
        .act(
            &id,
            Action::Reassess {
                category: 4,
                level: 3,
            },
        )
        .unwrap();
    let level3 = format!("{id}43");
    until(
        "the level change reaches the card and the subsidies",
        || {
            card().as_deref() == Some(level3.as_str())
                && paid(&sims, &next, &id) == payments(&level3, 41_000, 0)
        },
    )
    .await;
    assert_eq!(
        paid(&sims, &this, &id),
        payments(&level3, 41_000, 15_000),
        "the amount changes next month; this month is paid against the current certificate"
    );

    // Re-assessed as intellectual, level 3: the care subsidy's extension,
    // at 50 % of level 2.
    sims.cert
        .act(
            &id,
            Action::Reassess {
                category: 5,
                level: 3,
            },
        )
        .unwrap();
    let intellectual = format!("{id}53");
    until(
        "the category change reaches the card and the subsidies",
        || {
            card().as_deref() == Some(intellectual.as_str())
                && paid(&sims, &next, &id) == payments(&intellectual, 41_000, 7_500)
        },
    )
    .await;

    // Reissued after a loss: B1 on the card, valid as long as the lost
    // certificate was, and the payments of this month and the next against
    // the new number.
    // (Made 400 days ago: a reissue made today must not take today's
    // ten years.)
    sims.cert.backdate(&id, 400);
    let valid_until = chrono::NaiveDate::parse_from_str(
        &sims.sscard.certificate_function(&id).unwrap().1,
        "%Y%m%d",
    )
    .unwrap()
    .checked_sub_days(chrono::Days::new(400))
    .unwrap()
    .format("%Y%m%d")
    .to_string();
    sims.platform
        .file(&form1("SX-LIFE-2", "REISSUE", Some(intellectual.as_str())));
    let b1 = format!("{intellectual}B1");
    until("the reissue reaches the card and the subsidies", || {
        card().as_deref() == Some(b1.as_str())
            && paid(&sims, &next, &id) == payments(&b1, 41_000, 7_500)
    })
    .await;
    assert_eq!(
        sims.sscard.certificate_function(&id),
        Some((b1.clone(), valid_until.clone())),
        "a reissued certificate keeps its validity"
    );
    assert!(
        paid(&sims, &this, &id).iter().all(|(_, _, c)| *c == b1),
        "the old number is no longer paid against: {:?}",
        paid(&sims, &this, &id)
    );
    // Damaged (损毁换领): renewed at once, keeping the issue date and the
    // validity; a renewal for expiry so early is refused.
    let loads = || {
        let mut n = 0;
        sims.sscard
            .common
            .for_each("card_loaded", |e| n += usize::from(e.subject() == id));
        n
    };
    let loaded = loads();
    let mut damaged: serde_json::Value =
        serde_json::from_slice(&form1("SX-LIFE-2D", "RENEW", Some(b1.as_str()))).unwrap();
    damaged["renewal_reason"] = "DAMAGED".into();
    sims.platform.file(&serde_json::to_vec(&damaged).unwrap());
    let status = |app: &str| sims.platform.statuses().get(app).cloned();
    until("the damaged certificate renewed and loaded", || {
        status("SX-LIFE-2D").as_deref() == Some("CERTIFICATE_ISSUED") && loads() == loaded + 1
    })
    .await;
    assert_eq!(
        sims.sscard.certificate_function(&id),
        Some((b1.clone(), valid_until.clone())),
        "a damaged certificate's renewal keeps its validity"
    );
    sims.platform
        .file(&form1("SX-LIFE-2E", "RENEW", Some(b1.as_str())));
    until("an early renewal refused", || {
        status("SX-LIFE-2E").as_deref() == Some("REJECTED")
    })
    .await;

    // Died: the card unloaded, nothing from next month.
    sims.cert
        .act(
            &id,
            Action::Cancel {
                reason: "DECEASED".into(),
            },
        )
        .unwrap();
    until("the death reaches the card and the subsidies", || {
        card().is_none() && paid(&sims, &next, &id).is_empty()
    })
    .await;
    assert_eq!(paid(&sims, &this, &id).len(), 2, "this month is still paid");
    // Each decision once in the subsidies system: one eligibility, two
    // stops (the freeze, the death), four reassessments (the unfreeze, two
    // re-assessments, the reissue).
    let count = |c: &tongban::sim::Common, kind: &str| {
        let mut n = 0;
        c.for_each(kind, |e| n += usize::from(e.subject() == id));
        n
    };
    assert_eq!(count(&sims.subsidies.common, "stop"), 2);
    assert_eq!(count(&sims.subsidies.common, "reassessment"), 4);
    assert_eq!(count(&sims.subsidies.common, "eligibility"), 1);

    // A second person, level 1 in a 低保 household: civil affairs reports
    // that the household left 低保, then (public security) that the person
    // died, before the certificate system knows.
    let q = &people[1];
    let qid = q.id.clone();
    sims.cert.assess(&qid, 4, 1);
    sims.sscard.issue_card(&qid);
    let form2 = support::chain::form("SX-LIFE-3", "NEW", q, None, serde_json::json!({}));
    sims.platform.file(&form2);
    let qcert = format!("{qid}41");
    until("the second certificate issued and paid", || {
        sims.sscard.loaded_on(&qid).as_deref() == Some(qcert.as_str())
            && paid(&sims, &next, &qid) == payments(&qcert, 41_000, 30_000)
    })
    .await;
    sims.civil.change_dibao(&qid, &q.name, "NONE");
    until(
        "leaving 低保 ends the living subsidy from next month",
        || paid(&sims, &next, &qid) == payments(&qcert, 0, 30_000),
    )
    .await;
    assert_eq!(
        paid(&sims, &this, &qid),
        payments(&qcert, 41_000, 30_000),
        "this month is paid as decided"
    );
    sims.civil
        .report_death(&qid, &q.name, Some(&now.to_string()));
    until(
        "the death stops the subsidies, cancels the certificate, unloads the card",
        || {
            paid(&sims, &next, &qid).is_empty()
                && sims.sscard.loaded_on(&qid).is_none()
                && !sims.cert.certificates().contains_key(&qid)
        },
    )
    .await;
    // The cancellation's own stop reaches the subsidies system too, with
    // the death's idempotency key: delivered, and not applied again.
    let stops_delivered = || async {
        store
            .messages("subsidies.stop", tongban::store::status::DELIVERED, 100)
            .await
            .unwrap()
            .iter()
            .filter(|m| m.key == qid)
            .map(|m| m.idem_key.clone())
            .collect::<Vec<_>>()
    };
    support::eventually(Duration::from_secs(30), "both stops delivered", || async {
        stops_delivered().await.len() == 2
    })
    .await;
    let keys = stops_delivered().await;
    assert_eq!(keys[0], keys[1], "one effect, one key: {keys:?}");
    assert_eq!(
        count(&sims.subsidies.common, "stop"),
        2,
        "the first person's two"
    );
    let mut qstops = 0;
    sims.subsidies
        .common
        .for_each("stop", |e| qstops += usize::from(e.subject() == qid));
    assert_eq!(qstops, 1, "the death is one stop");
    let mut cancellations = 0;
    sims.cert.common.for_each("cancellation", |e| {
        cancellations += usize::from(e.subject() == qid)
    });
    assert_eq!(cancellations, 1);

    // A third person has held a level 2 certificate for years and now
    // applies for the subsidies, the pension and work, on the one form,
    // without a certificate request: paid from this month.
    let r = &people[2];
    let rcert = format!("{}42", r.id);
    let form3 = support::chain::form(
        "SX-LIFE-4",
        "SERVICES",
        r,
        Some(&rcert),
        serde_json::json!({"dibao": "NEAR_DIBAO", "wants_employment": true, "pension": "NONE"}),
    );
    let certs_before = sims.cert.events();
    // Holders have had their card for years: the services application
    // loads the certificate onto it again, and its account is reported.
    sims.sscard.issue_card(&r.id);
    sims.platform.file(&form3);
    let seen = |c: &tongban::sim::Common, kind: &str| {
        let mut n = 0;
        c.for_each(kind, |e| n += usize::from(e.subject() == r.id));
        n
    };
    until("the holder's subsidies, pension and referral", || {
        paid(&sims, &this, &r.id) == payments(&rcert, 41_000, 15_000)
            && seen(&sims.pension.common, "enrolled") == 1
            && seen(&sims.employment.common, "referred") == 1
    })
    .await;
    assert_eq!(
        sims.cert.events(),
        certs_before,
        "nothing was asked of the certificate system"
    );
    // Each department's decision goes back to the applicant (统一反馈).
    until(
        "the three departments' decisions reach the applicant",
        || {
            let mut told: Vec<String> = sims
                .platform
                .feedback("SX-LIFE-4")
                .iter()
                .map(|f| f.split(':').next().unwrap_or("").to_string())
                .collect();
            told.sort();
            told == [
                "EMPLOYMENT EMPLOYMENT_REFERRED",
                "PENSION PENSION_ENROLLED",
                "SUBSIDIES SUBSIDY_GRANTED",
            ]
        },
    )
    .await;

    // A fourth person: a multiple disability at level 3 that includes an
    // intellectual one gets the care subsidy's extension, at 50 %.
    let m = tongban::synth::person(&mut tongban::synth::Rng::new(8));
    sims.cert.assess_multiple(&m.id, 7, 3, true);
    sims.sscard.issue_card(&m.id);
    // Applying alone, the certificate system refuses: a person with an
    // intellectual disability applies through a guardian (监护人).
    let alone = support::chain::form(
        "SX-LIFE-5A",
        "NEW",
        &m,
        None,
        serde_json::json!({"dibao": "NONE", "needs_long_term_care": false}),
    );
    sims.platform.file(&alone);
    let refused = || async {
        support::chain::statuses_delivered(&store, &m.id)
            .await
            .into_iter()
            .find(|v| v["application_id"] == "SX-LIFE-5A" && v["status"] == "REJECTED")
    };
    support::eventually(
        Duration::from_secs(30),
        "the refusal without a guardian",
        || async { refused().await.is_some() },
    )
    .await;
    let why = refused().await.unwrap();
    assert!(why["message"].as_str().unwrap().contains("监护人"), "{why}");
    assert!(sims.sscard.loaded_on(&m.id).is_none());
    let form4 = support::chain::form(
        "SX-LIFE-5",
        "NEW",
        &m,
        None,
        serde_json::json!({"dibao": "NONE", "needs_long_term_care": false,
                           "guardian": tongban::synth::guardian(&m)}),
    );
    sims.platform.file(&form4);
    let mcert = format!("{}73", m.id);
    until("the multiple disability's care subsidy", || {
        paid(&sims, &this, &m.id) == payments(&mcert, 0, 7_500)
    })
    .await;
    // Its other categories cancelled (注销部分残疾类别), physical (4)
    // remains: the new certificate on the card, and from next month no care
    // subsidy (physical at level 3 has none); the old certificate's
    // cancellation neither unloads the card nor stops the subsidies.
    sims.cert
        .act(&m.id, Action::CancelCategories { keep: 4 })
        .unwrap();
    let physical = format!("{}43", m.id);
    until(
        "the partial cancellation reaches the card and the subsidies",
        || {
            sims.sscard.loaded_on(&m.id).as_deref() == Some(physical.as_str())
                && paid(&sims, &next, &m.id).is_empty()
        },
    )
    .await;
    let of_m = |c: &tongban::sim::Common, kind: &str| {
        let mut n = 0;
        c.for_each(kind, |e| n += usize::from(e.subject() == m.id));
        n
    };
    assert_eq!(of_m(&sims.sscard.common, "card_unloaded"), 0);
    assert_eq!(of_m(&sims.subsidies.common, "stop"), 0);
    assert_eq!(of_m(&sims.subsidies.common, "reassessment"), 1);

    // A fifth person's assessment finds no qualifying disability: the
    // platform hears the refusal and its reason; nothing else happens.
    let f = tongban::synth::person(&mut tongban::synth::Rng::new(9));
    sims.cert.assess_fails(&f.id);
    let mut form5: serde_json::Value = serde_json::from_slice(&form4).unwrap();
    form5["application_id"] = "SX-LIFE-6".into();
    form5["applicant"]["id_no"] = f.id.clone().into();
    form5["applicant"]["name"] = f.name.clone().into();
    form5["applicant"]["region_code"] = f.region.clone().into();
    form5["bank"]["account_name"] = f.name.clone().into();
    sims.platform.file(&serde_json::to_vec(&form5).unwrap());
    until("the refusal reaches the applicant", || {
        sims.platform
            .statuses()
            .get("SX-LIFE-6")
            .map(String::as_str)
            == Some("REJECTED")
    })
    .await;
    // Recorded delivered once the platform's answer is in (a moment after
    // the platform applied it).
    let delivered = || async {
        support::chain::statuses_delivered(&store, &f.id)
            .await
            .into_iter()
            .next()
    };
    support::eventually(
        Duration::from_secs(30),
        "the status recorded delivered",
        || async { delivered().await.is_some() },
    )
    .await;
    let told = delivered().await.unwrap();
    assert!(
        told["message"].as_str().unwrap().contains("评定不符合"),
        "the reason goes with it: {told}"
    );
    assert!(paid(&sims, &this, &f.id).is_empty());
    assert!(sims.sscard.loaded_on(&f.id).is_none());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificates_life_reaches_the_card_and_the_subsidies_sqlite() {
    scenario(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificates_life_reaches_the_card_and_the_subsidies_postgres() {
    scenario(Some(support::pg::database().await)).await;
}
