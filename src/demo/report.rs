//! The report: what each simulated system saw, compared with the model,
//! person by person; the invariants, the phases and the figures, printed
//! and written to `report.json`.

use crate::sim;
use crate::store::{status, Counts};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::model::{payment_id, Applicant};
use super::phases::{first_of_month_after, Province, Run};
use super::scenario::Sims;
use super::DemoArgs;

/// A reason as one line per kind of problem: markup removed, numbers
/// (already masked) folded, at most 110 characters.
/// A reason as one line per kind of problem: markup removed, numbers
/// (already masked) folded, at most 110 characters.
pub(super) fn summary(reason: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    let mut run = 0;
    for c in reason.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if in_tag => {}
            c if c.is_ascii_digit() || c == '*' => {
                run += 1;
                if run == 4 {
                    for _ in 0..3 {
                        out.pop();
                    }
                    out.push('…');
                } else if run < 4 {
                    out.push(c);
                }
            }
            c => {
                run = 0;
                out.push(c);
            }
        }
    }
    let out = out.replace("{\"error\":\"", "").replace("\"}", "");
    let out = match out.find("check character is ") {
        Some(i) => format!("{}check character wrong", &out[..i]),
        None => out,
    };
    out.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(110)
        .collect()
}

pub(super) fn percentile(sorted: &[i64], q: u64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as u64 - 1) * q / 100) as usize]
}

pub(super) fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

pub(super) async fn report(
    args: &DemoArgs,
    provs: &[Province],
    people: &[(Applicant, Vec<u8>)],
    elapsed: Duration,
    run: &Run,
) -> Result<bool, String> {
    // The counts of every province's store, and together (their helpers
    // sum what matches).
    let mut per_store = Vec::new();
    let mut counts = Counts::default();
    for p in provs {
        let c = p.store.counts().await.map_err(|e| e.to_string())?;
        counts.messages.extend(c.messages.iter().cloned());
        counts.retries.extend(c.retries.iter().cloned());
        counts.quarantined.extend(c.quarantined.iter().cloned());
        per_store.push(c);
    }
    let cfg = provs[0].cfg;
    let sims = &provs[0].sims;
    let mut invariants = BTreeMap::new();

    // Each person whose certificate was issued and who has a card: the
    // card loaded exactly once, with their certificate; nobody else's.
    // The ledgers are read in place (a copy of a ledger of millions of
    // effects would be the demo's largest allocation), and what is counted
    // per applicant is kept by their place in `people`.
    let place: HashMap<&str, usize> = people
        .iter()
        .enumerate()
        .map(|(i, (a, _))| (a.id.as_str(), i))
        .collect();
    // Per kind of effect in the first month (before the lifecycle phase):
    // how many each applicant got, the latencies from filing, and how many
    // went to someone who never applied.
    // Over every province's system of that kind.
    let tally = |system: fn(&Sims) -> &Arc<sim::Common>, kind: &str| {
        let mut n = vec![0u32; people.len()];
        let mut latency = Vec::new();
        let mut strangers = 0;
        for p in provs {
            system(&p.sims).for_each(kind, |e| match place.get(e.subject()) {
                _ if e.at >= run.lifecycle_from_ms => {}
                Some(&i) => {
                    n[i] += 1;
                    latency.push(e.at - people[i].0.filed_at);
                }
                None => strangers += 1,
            });
        }
        latency.sort_unstable();
        (n, latency, strangers)
    };
    let (per_person, card_lat, strangers) = tally(|s| &s.sscard.common, "card_loaded");
    let cards_ok = strangers == 0
        && people.iter().zip(&per_person).all(
            |((a, _), &n)| {
                if a.card_loaded() {
                    n == 1
                } else {
                    n == 0
                }
            },
        );
    drop(per_person);
    invariants.insert("each_eligible_card_loaded_exactly_once", cards_ok);

    // Each month's payout list: each person the rules pay once per
    // subsidy, with the amount the rules give them for that month, from
    // their history in the model; nobody else. The months paid: the bank
    // credited each payment of the list exactly once (re-issues included),
    // so each person got exactly what the rules give them. The month after
    // the last is listed but not paid: it shows the last month's changes.
    // Each list is read a payment at a time: per applicant, the amount and
    // count listed for each subsidy, and what the bank credited them.
    let rates = &sims.subsidies.rates;
    let by_card = rates.pay_to_card_account;
    let (mut lists_ok, mut paid_ok, mut to_card, mut numbers_ok) = (true, true, true, true);
    let mut expected_paid = 0usize;
    let mut months = Vec::new();
    let mask = crate::domain::mask::id_number;
    let mut overpaid = Vec::new();
    // Payments listed by a province whose systems are not the person's
    // that month (a move paid twice, or by the wrong province).
    let mut elsewhere = 0usize;
    let last = run.months.len();
    let mut first_list = (0usize, 0i64);
    for month in 0..=last {
        let period = match run.months.get(month) {
            Some(m) => m.period.clone(),
            None => run
                .months
                .last()
                .and_then(|m| first_of_month_after(&m.period))
                .map_or(String::new(), |d| d.format("%Y-%m").to_string()),
        };
        let mut listed = vec![[(0i64, 0u32); 2]; people.len()];
        let mut paid_per_person = vec![0i64; people.len()];
        let (mut list_len, mut total, mut unknown, mut old_numbers) =
            (0usize, 0i64, 0usize, 0usize);
        let mut by_province = Vec::new();
        for (k, prov) in provs.iter().enumerate() {
            let (len_before, total_before) = (list_len, total);
            prov.sims.subsidies.for_each_payout(&period, |p| {
                list_len += 1;
                to_card &=
                    !by_card || p.bank_account_no == prov.sims.sscard.account_of(&p.holder_id).0;
                total += p.amount_fen;
                if place
                    .get(p.holder_id.as_str())
                    .is_some_and(|&i| people[i].0.province_at(month) != k)
                {
                    elsewhere += 1;
                }
                let (Some(&i), Some(care)) = (
                    place.get(p.holder_id.as_str()),
                    match p.subsidy_type.as_str() {
                        "LIVING" => Some(0),
                        "CARE" => Some(1),
                        _ => None,
                    },
                ) else {
                    unknown += 1;
                    return;
                };
                let e = &mut listed[i][care];
                *e = (p.amount_fen, e.1 + 1);
                if month == last && p.certificate_no != people[i].0.number_at(last) {
                    old_numbers += 1;
                }
                let id = payment_id(&p.subsidy_type, &p.holder_id, &period);
                if run.credited.get(&id) == Some(&1) {
                    paid_per_person[i] += p.amount_fen;
                }
            });
            by_province.push(json!({
                "province": prov.name,
                "listed": list_len - len_before,
                "total_fen": total - total_before,
            }));
        }
        let (mut expected_total, mut expected_items, mut list_ok) = (0i64, 0usize, unknown == 0);
        let mut month_paid_ok = true;
        for (((a, _), have), got) in people.iter().zip(&listed).zip(&paid_per_person) {
            let (living, care) = a.amounts(rates, month);
            for (fen, have) in [living, care].into_iter().zip(have) {
                if fen > 0 {
                    expected_total += fen;
                    expected_items += 1;
                    list_ok &= *have == (fen, 1);
                } else {
                    list_ok &= have.1 == 0;
                }
            }
            month_paid_ok &= *got == living + care;
        }
        list_ok &= list_len == expected_items && total == expected_total;
        lists_ok &= list_ok;
        numbers_ok &= old_numbers == 0;
        if month == 0 {
            first_list = (list_len, total);
        }
        let mut row = json!({
            "period": period,
            "listed": list_len,
            "total_fen": total,
            "list_follows_the_rules": list_ok,
        });
        if provs.len() > 1 {
            row["by_province"] = json!(by_province);
        }
        if let Some(m) = run.months.get(month) {
            month_paid_ok &= m.settled;
            paid_ok &= month_paid_ok;
            expected_paid += expected_items;
            row["paid_as_the_rules_give"] = json!(month_paid_ok);
            row["batches"] = json!(m.batches);
            row["rejected_first"] = json!(m.rejected);
            row["reissued"] = json!(m.reissued);
            row["changes_after_the_payouts"] = m
                .changes
                .iter()
                .map(|(k, n)| (k.to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            row["cards_not_as_the_certificate"] = json!(m.cards_wrong);
            // Deaths registered after the month they fall in was paid:
            // those payments were made (the death not yet known), the
            // hub's payout register holds the person's payments from the
            // month after the death and raises a paid_after_stop alarm for
            // each one already paid, for recovery (追回); the model says
            // which.
            let before = overpaid.len();
            for (a, _) in people {
                for id in a.paid_after_death(rates, month, &period) {
                    paid_ok &= run.credited.get(&id) == Some(&1);
                    overpaid.push(id.replace(&a.id, &mask(&a.id)));
                }
            }
            row["paid_after_a_death_registered_late"] = json!(overpaid.len() - before);
        }
        months.push(row);
    }
    let mut alarmed: Vec<String> = run
        .alarms
        .iter()
        .filter(|a| a.kind == "paid_after_stop" && a.detail.contains("the bank paid it"))
        .filter_map(|a| {
            a.detail
                .strip_prefix("payment ")?
                .split(' ')
                .next()
                .map(str::to_string)
        })
        .collect();
    overpaid.sort();
    alarmed.sort();
    invariants.insert(
        "every_payment_after_a_death_alarmed_for_recovery",
        overpaid == alarmed,
    );
    paid_ok &= run.credited.len() == expected_paid + overpaid.len();
    invariants.insert("each_month_paid_exactly_what_the_rules_give", paid_ok);
    invariants.insert("no_payment_paid_twice", run.paid_twice.is_empty());
    // Each month listed by the province whose systems are the person's
    // that month: the old one in the month of a move, the new one after.
    invariants.insert("each_month_paid_by_the_persons_province", elsewhere == 0);
    // Where the province pays through the card: every payment to the
    // account of the holder's social security card, none to the account
    // the form gave.
    invariants.insert("payouts_only_to_the_card_account", to_card);
    invariants.insert("each_month_payout_list_follows_the_rules", lists_ok);
    // A reissued or re-assessed certificate: paid against the new number,
    // the old one no longer on any list.
    invariants.insert(
        "payout_lists_carry_the_current_certificate_number",
        numbers_ok,
    );
    // Each card carries the certificate as it is at each month's end (or
    // nothing while frozen, once dead).
    invariants.insert(
        "each_card_follows_its_certificate",
        run.months.iter().all(|m| m.cards_wrong == 0),
    );

    // The applications filed after the first (reissues, renewals): each
    // answered on the platform as the rules say, a renewal before the last
    // year of the ten refused (不予办理).
    let mut statuses = HashMap::new();
    for p in provs {
        statuses.extend(p.sims.platform.statuses());
    }
    let mut later = (0usize, 0usize);
    let later_ok = people.iter().all(|(a, _)| {
        a.later_applications().iter().all(|(app, granted)| {
            let st = statuses.get(app).map(String::as_str);
            later.0 += 1;
            later.1 += usize::from(!granted);
            match granted {
                true if app.contains("-MI") => matches!(
                    st,
                    Some("CERTIFICATE_CHANGED" | "CARD_LOADED" | "SUBSIDY_GRANTED")
                ),
                true => matches!(st, Some("CERTIFICATE_ISSUED" | "CARD_LOADED")),
                false => st == Some("REJECTED"),
            }
        })
    });
    drop(statuses);
    invariants.insert(
        "every_later_application_answered_as_the_rules_say",
        later_ok,
    );

    // Pension and employment: exactly the people the rules select.
    let once = |c: fn(&Sims) -> &Arc<sim::Common>, kind: &str, f: fn(&Applicant) -> bool| {
        let (n, _, strangers) = tally(c, kind);
        strangers == 0 && people.iter().zip(n).all(|((a, _), n)| n == u32::from(f(a)))
    };
    invariants.insert(
        "each_pension_enrolment_exactly_once",
        once(|s| &s.pension.common, "enrolled", Applicant::pension),
    );
    invariants.insert(
        "each_employment_referral_exactly_once",
        once(|s| &s.employment.common, "referred", Applicant::employment),
    );

    // Every applicant whose certificate was issued sees it on the platform:
    // each application's latest status, kept by the applicant's place.
    let application: HashMap<&str, usize> = people
        .iter()
        .enumerate()
        .map(|(i, (a, _))| (a.application_id.as_str(), i))
        .collect();
    // On the platform the form was filed on (跨省通办: the province of
    // residence), and on no other.
    let mut issued_seen = vec![false; people.len()];
    let mut elsewhere_told = 0usize;
    for (k, p) in provs.iter().enumerate() {
        p.sims.platform.common.for_each("status", |e| {
            if let Some(&i) = application.get(e.subject()) {
                issued_seen[i] = matches!(e.detail(), "CERTIFICATE_ISSUED" | "CARD_LOADED");
                elsewhere_told += usize::from(people[i].0.filed_in != k);
            }
        });
    }
    drop(application);
    let status_ok = people
        .iter()
        .zip(&issued_seen)
        .all(|((a, _), seen)| !a.certified() || *seen)
        && elsewhere_told == 0;
    invariants.insert("every_certified_applicant_sees_the_status", status_ok);

    // Deadlines: the stages the hub's register reports as breached (late,
    // or open past their limit) are exactly those the model's paces and
    // the limits of CDPF 2021-10 §5 give.
    let now = crate::store::now_ms();
    let (deadlines_ok, deadlines) = match crate::connectors::deadlines::report::settings(cfg) {
        None => (false, json!(null)),
        Some(s) => {
            let e = |e: crate::store::StoreError| e.to_string();
            let model: std::collections::BTreeSet<(String, String)> = people
                .iter()
                .flat_map(|(a, _)| {
                    a.breaches(now, &s.calendar)
                        .into_iter()
                        .map(|st| (a.application_id.clone(), st.to_string()))
                })
                .collect();
            let most = people.len() * 4 + 10;
            // Each province's register follows the applications filed on
            // its platform.
            let mut hub = std::collections::BTreeSet::new();
            let mut stages: Vec<crate::store::StageCount> = Vec::new();
            let mut hub_soon = std::collections::BTreeSet::new();
            let soon = crate::connectors::deadlines::soon_ms(&s, now);
            for p in provs {
                let store = &p.store;
                for r in store.late_stages(most).await.map_err(e)? {
                    hub.insert((r.application_id, r.stage));
                }
                for r in store
                    .open_stages_due_between(i64::MIN, now - 1, most)
                    .await
                    .map_err(e)?
                {
                    hub.insert((r.application_id, r.stage));
                }
                let r = crate::connectors::deadlines::report::report(&s, store, now)
                    .await
                    .map_err(e)?;
                stages.extend(r.stages);
                for r in store
                    .open_stages_due_between(now, soon, most)
                    .await
                    .map_err(e)?
                {
                    hub_soon.insert(r.application_id);
                }
            }
            // And the applications due within one working day.
            let model_soon: std::collections::BTreeSet<String> = people
                .iter()
                .filter(|(a, _)| {
                    a.waiting(&s.calendar)
                        .is_some_and(|(_, due)| due >= now && due <= soon)
                })
                .map(|(a, _)| a.application_id.clone())
                .collect();
            let sum = |f: fn(&crate::store::StageCount) -> i64| stages.iter().map(f).sum::<i64>();
            (
                model == hub && model_soon == hub_soon,
                json!({
                    "open": sum(|c| c.open),
                    "overdue": sum(|c| c.overdue),
                    "due_soon": sum(|c| c.due_soon),
                    "late": sum(|c| c.late),
                    "breaches_in_the_model": model.len(),
                    "breaches_reported": hub.len(),
                }),
            )
        }
    };
    invariants.insert("every_deadline_breach_reported_and_real", deadlines_ok);

    // Every bad record explained where the chain meets it, with a reason:
    // a bad ID number quarantined by the application feed, a missing name
    // refused by the certificate system, a person without a card refused
    // by the card system, a bad bank card quarantined by the subsidy feed
    // (for those who apply for a subsidy: the others' card is never used;
    // the last two once the certificate is issued, not while it waits).
    let stage = |f: &dyn Fn(&Applicant) -> bool| people.iter().filter(|(a, _)| f(a)).count() as i64;
    let bad_is = |a: &Applicant, why: &str| a.bad == Some(why);
    let want = [
        stage(&|a| bad_is(a, "ID number fails its check digit")),
        stage(&|a| bad_is(a, "name missing")),
        stage(&|a| a.certified() && bad_is(a, "no social security card")),
        stage(&|a| a.certified() && bad_is(a, "bank card fails its check digit")),
    ];
    let got = [
        counts.quarantined("application_to_cert_application"),
        counts.messages("national_cert.submit_application", status::DEAD),
        counts.messages("sscard.load_certificate", status::DEAD),
        counts.quarantined("certificate_issued_to_subsidy_eligibility"),
    ];
    let mut reasons: BTreeMap<String, i64> = BTreeMap::new();
    let mut other_dead = 0;
    for (p, counts) in provs.iter().zip(&per_store) {
        let store = &p.store;
        let mut sources: Vec<&String> = counts.quarantined.iter().map(|q| &q.source).collect();
        sources.dedup();
        for source in sources {
            for q in store.quarantine(source).await.map_err(|e| e.to_string())? {
                *reasons
                    .entry(format!(
                        "quarantined by {}: {}",
                        q.mapping,
                        summary(&q.reason)
                    ))
                    .or_default() += 1;
            }
        }
        for c in &counts.messages {
            let (t, n) = (&c.target, c.messages);
            if c.status == status::DEAD {
                if t != "national_cert.submit_application" && t != "sscard.load_certificate" {
                    other_dead += n;
                }
                for m in store
                    .messages(t, status::DEAD, 1_000_000)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    let why = summary(&m.last_error.unwrap_or_default());
                    *reasons.entry(format!("dead at {t}: {why}")).or_default() += 1;
                }
            }
        }
    }
    invariants.insert(
        "every_rejected_record_explained",
        want == got && other_dead == 0 && reasons.keys().all(|r| !r.ends_with(": ")),
    );

    // Latency: form filed → card loaded, and → subsidy decided.
    let (_, subsidy_lat, _) = tally(|s| &s.subsidies.common, "eligibility");

    let mut feeds = Vec::new();
    for m in cfg.mappings.values() {
        let t = m.to.to_string();
        feeds.push(json!({
            "feed": m.name,
            "target": t,
            "delivered_to_target": counts.messages(&t, status::DELIVERED),
            "retried_attempts_at_target": counts.retries(&t),
            "dead": counts.messages(&t, status::DEAD),
            "pending": counts.messages(&t, status::PENDING),
            "quarantined": counts.quarantined(&m.name),
        }));
    }
    // The exchange log of each hub: every fact chained, intact from its
    // first entry and sealed to its last (the hub seals when it stops).
    let mut logs = Vec::new();
    let mut logs_ok = true;
    for p in provs {
        let e = |e: crate::store::StoreError| e.to_string();
        let key = crate::hub::evidence::seal_key(p.cfg).map_err(|e| e.to_string())?;
        let keys: Vec<_> = key.iter().map(|k| k.public()).collect();
        let counts = p.store.log_counts().await.map_err(e)?;
        let checked = p
            .store
            .verify_log(keys.clone(), 1, counts.chained)
            .await
            .map_err(e)?;
        let v = &checked.verified;
        let ok = checked.broken.is_none()
            && !keys.is_empty()
            && counts.unchained == 0
            && counts.chained > 0
            && v.entries == counts.chained
            && v.sealed_to == Some(counts.chained);
        logs_ok &= ok;
        logs.push(json!({
            "province": p.name,
            "entries": counts.chained,
            "unchained": counts.unchained,
            "seals": counts.seals,
            "sealed_to": v.sealed_to,
            "key": keys.first().map(|k| k.id()),
            "broken": checked.broken.as_ref().map(|b| b.to_string()),
        }));
    }
    invariants.insert("exchange_log_intact_and_sealed", logs_ok);
    let all_ok = invariants.values().all(|v| *v);
    // Per simulator, and what their ledgers take in all.
    let mut ledgers = (0, 0);
    let mut systems = vec![(None, &sims.cert.common)];
    for p in provs {
        let name = (provs.len() > 1).then_some(p.name);
        for c in [
            &p.sims.platform.common,
            &p.sims.sscard.common,
            &p.sims.subsidies.common,
            &p.sims.pension.common,
            &p.sims.employment.common,
        ] {
            systems.push((name, c));
        }
    }
    let simulators: Vec<Value> = systems
        .iter()
        .map(|(province, c)| {
            let l = c.ledger.lock().unwrap();
            ledgers = (ledgers.0 + l.len(), ledgers.1 + l.footprint());
            json!({
                "system": match province {
                    Some(p) => format!("{} ({p})", c.name),
                    None => c.name.to_string(),
                },
                "requests": c.requests.load(std::sync::atomic::Ordering::Relaxed),
                "faults_injected": c.faulted.load(std::sync::atomic::Ordering::Relaxed),
                "repeated_deliveries": l.repeats,
                "ledger_effects": l.len(),
                "ledger_bytes": l.footprint(),
            })
        })
        .collect();
    let report = json!({
        "people": people.len(),
        "provinces": provs.iter().map(|p| p.name).collect::<Vec<_>>(),
        // To the millisecond: a float's 16 digits would read like a card
        // number to anyone (and to the masking check) scanning the report.
        "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "people_per_second": (people.len() as f64 / elapsed.as_secs_f64().max(0.001) * 10.0).round() / 10.0,
        "peak_rss_mb": peak_rss_mb(),
        "faults": !args.no_faults,
        "exchange_log": logs,
        "channels": {
            "bank": if args.bank_sftp { "sftp" } else { "directory" },
            "employment": if args.employment_tables.is_some() { "tables" } else { "http" },
        },
        "period": run.months.first().map(|m| m.period.clone()),
        "payout_list": {"items": first_list.0, "total_fen": first_list.1},
        "months": months,
        "bank": {
            "batches": run.months.iter().map(|m| m.batches).sum::<usize>(),
            "rejected_first": run.months.iter().map(|m| m.rejected).sum::<usize>(),
            "reissued": run.months.iter().map(|m| m.reissued).sum::<usize>(),
            "paid": run.credited.len(),
            "paid_twice": run.paid_twice.len(),
            "alarms": run.alarms.len(),
        },
        "deadlines": deadlines,
        "later_applications": {"filed": later.0, "refused": later.1},
        "filed_in_another_province": people.iter().filter(|(a, _)| a.filed_in != a.home).count(),
        "phases_end_s": run.phases.iter().map(|(n, t)| json!({"phase": n, "end_s": (t * 10.0).round() / 10.0})).collect::<Vec<_>>(),
        "latency_ms": {
            "filed_to_card_loaded": {"p50": percentile(&card_lat, 50), "p99": percentile(&card_lat, 99)},
            "filed_to_subsidy_decided": {"p50": percentile(&subsidy_lat, 50), "p99": percentile(&subsidy_lat, 99)},
        },
        "feeds": feeds,
        "simulators": simulators,
        "rejected": reasons,
        "invariants": invariants,
    });
    let path = args.workdir.join("report.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;

    println!();
    println!(
        "{} people in {:.1} s ({:.0} people/s), peak RSS {} MB, faults {}{}{}",
        people.len(),
        elapsed.as_secs_f64(),
        people.len() as f64 / elapsed.as_secs_f64().max(0.001),
        peak_rss_mb(),
        if args.no_faults { "off" } else { "on" },
        if args.bank_sftp {
            "; bank over SFTP (a private OpenSSH server)"
        } else {
            ""
        },
        if args.employment_tables.is_some() {
            "; employment over front-end tables"
        } else {
            ""
        }
    );
    println!(
        "simulator ledgers: {} effects in {:.1} MB compressed ({:.1} bytes an effect)",
        ledgers.0,
        ledgers.1 as f64 / 1e6,
        ledgers.1 as f64 / ledgers.0.max(1) as f64
    );
    for l in report["exchange_log"].as_array().into_iter().flatten() {
        println!(
            "exchange log ({}): {} entries, sealed to entry {} by {} ({} seals){}",
            l["province"].as_str().unwrap_or(""),
            l["entries"],
            l["sealed_to"],
            l["key"].as_str().unwrap_or("no key"),
            l["seals"],
            l["broken"]
                .as_str()
                .map(|b| format!("; NOT INTACT: {b}"))
                .unwrap_or_default()
        );
    }
    println!(
        "phases ended at: {}",
        run.phases
            .iter()
            .map(|(n, t)| format!("{n} {t:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{:<46} {:>9} {:>9} {:>6} {:>11}",
        "feed", "delivered", "retried", "dead", "quarantined"
    );
    for f in report["feeds"].as_array().into_iter().flatten() {
        let n = |k: &str| f[k].as_i64().unwrap_or(0);
        println!(
            "{:<46} {:>9} {:>9} {:>6} {:>11}",
            f["feed"].as_str().unwrap_or(""),
            n("delivered_to_target"),
            n("retried_attempts_at_target"),
            n("dead"),
            n("quarantined")
        );
    }
    println!(
        "(delivered, retried and dead count per target; feeds that share a target show its total)"
    );
    println!(
        "latency, form filed → card loaded: p50 {} ms, p99 {} ms; → subsidy decided: p50 {} ms, p99 {} ms",
        percentile(&card_lat, 50),
        percentile(&card_lat, 99),
        percentile(&subsidy_lat, 50),
        percentile(&subsidy_lat, 99)
    );
    for m in report["months"].as_array().into_iter().flatten() {
        let changes = m["changes_after_the_payouts"]
            .as_object()
            .map(|c| {
                c.iter()
                    .map(|(k, n)| format!("{n} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        match m.get("batches") {
            Some(b) => println!(
                "{}: payout list {} payments, {} fen; bank: {b} batch files, {} rejected (closed accounts) and {} re-issued; {} paid to people whose death was registered after it (alarmed, to recover); then {}",
                m["period"].as_str().unwrap_or(""),
                m["listed"],
                m["total_fen"],
                m["rejected_first"],
                m["reissued"],
                m["paid_after_a_death_registered_late"],
                if changes.is_empty() { "no changes".to_string() } else { changes },
            ),
            None => println!(
                "{}: payout list {} payments, {} fen (not paid: checked against the last month's changes)",
                m["period"].as_str().unwrap_or(""),
                m["listed"],
                m["total_fen"],
            ),
        }
        if let Some(by) = m["by_province"].as_array() {
            println!(
                "         by province: {}",
                by.iter()
                    .map(|p| format!(
                        "{} {} payments, {} fen",
                        p["province"].as_str().unwrap_or(""),
                        p["listed"],
                        p["total_fen"]
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }
    if provs.len() > 1 {
        println!(
            "跨省通办: {} people of Shanxi applied in Zichuan (Shandong) with a residence permit; their certificates, cards and subsidies are Shanxi's, their answers on Shandong's platform",
            report["filed_in_another_province"]
        );
    }
    println!(
        "bank, all months: {} payments paid, {} paid twice, {} alarms",
        run.credited.len(),
        run.paid_twice.len(),
        run.alarms.len()
    );
    let d = &report["deadlines"];
    println!(
        "deadlines (working days, CDPF 2021-10 §5): {} applications open in a stage, {} overdue, {} due within one working day, {} stages ended late; {} breaches reported, {} in the model",
        d["open"], d["overdue"], d["due_soon"], d["late"], d["breaches_reported"], d["breaches_in_the_model"]
    );
    println!("rejected records, by reason:");
    for (r, n) in report["rejected"].as_object().into_iter().flatten() {
        println!("  {n:>6}  {r}");
    }
    println!("invariants:");
    for (k, v) in &report["invariants"]
        .as_object()
        .cloned()
        .unwrap_or_default()
    {
        println!(
            "  {} {k}",
            if v.as_bool() == Some(true) {
                "ok  "
            } else {
                "FAIL"
            }
        );
    }
    println!("report: {}", path.display());
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fold_into_kinds() {
        assert_eq!(
            summary("field `id_no`: invalid ID number 220102********1962: check character is 2, expected 1"),
            "field `id_no`: invalid ID number …: check character wrong"
        );
        assert_eq!(
            summary("the target answered HTTP 422: <?xml version=\"1.0\"?><R><code>422</code><message>unknown person</message></R>"),
            "the target answered HTTP 422: 422 unknown person"
        );
    }
}
