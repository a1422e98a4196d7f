//! The model: the synthetic people and, for each, what the rules give
//! them. The report checks what the simulated systems saw against it, never
//! against the hub's own store: it is the specification of what the hub
//! must do.

use crate::domain::workdays::{china_day, end_of_day_ms, Calendar};
use crate::sim::cert::Pace;
use crate::synth::{self, Rng};
use serde_json::json;

pub(super) struct Applicant {
    pub(super) application_id: String,
    pub(super) id: String,
    pub(super) name: String,
    pub(super) region: String,
    /// The province whose hub and systems the person filed with (an index
    /// of the demo's provinces: 0 the main one).
    pub(super) home: usize,
    /// Whether the person may move to the second province (跨省迁移).
    pub(super) can_move: bool,
    /// The province whose platform the first form was filed on: the home
    /// one, or (跨省通办) the second, where a person of Shanxi lives with a
    /// residence permit; the home province still issues, loads and pays.
    pub(super) filed_in: usize,
    pub(super) category: u8,
    pub(super) level: u8,
    /// What is wrong with the record, if anything.
    pub(super) bad: Option<&'static str>,
    pub(super) has_card: bool,
    pub(super) card_ok: bool,
    pub(super) dibao: &'static str,
    pub(super) care: bool,
    /// A multiple disability (7) that includes an intellectual or mental one.
    pub(super) includes_im: bool,
    pub(super) pension: &'static str,
    /// 16 up to the retirement age (60 for men, 55 for women), as the
    /// employment feeds count it.
    pub(super) working_age: bool,
    pub(super) wants_work: bool,
    /// The guardian (监护人) the person applies through, as the form gives
    /// it (JSON): a minor, or an intellectual or mental disability.
    pub(super) guardian: Option<String>,
    /// The bank account the form gave (JSON), kept for those who may move:
    /// their migration form gives it again.
    pub(super) bank: Option<String>,
    pub(super) filed_at: i64,
    /// What happens to the person after each month's payouts: (month, the
    /// change), months counted from 0, in order.
    pub(super) changes: Vec<(usize, Change)>,
    /// How the county offices pace the application, when they do not
    /// take every step at once.
    pub(super) pace: Option<Pace>,
}

/// The time limits of CDPF 2021-10 §5, in working days, per stage.
pub(super) const LIMITS: [(&str, u32); 3] = [
    ("RECEIVED", 3),
    ("ASSESSOR_NAMED", 10),
    ("NOTICE_COMPLETED", 7),
];

const DAY_MS: i64 = 86_400_000;

/// The pace of the `i`th application, made at `now` (ms): one in 20 is
/// paced, by turns: the assessor never named (accepted 8 days ago); the
/// result never entered (named 19 days ago); an assessment that took five
/// weeks and was then decided; a case that kept every limit; one whose
/// assessor is due by the end of the next working day (accepted
/// `soon_days` ago).
fn pace_of(i: usize, now: i64, soon_days: i64) -> Option<Pace> {
    let at = |days: i64| now - days * DAY_MS;
    match i % 100 {
        50 => Some(Pace {
            accepted_ms: at(soon_days),
            assigned_ms: None,
            noticed_ms: None,
            decided: false,
        }),
        11 => Some(Pace {
            accepted_ms: at(8),
            assigned_ms: None,
            noticed_ms: None,
            decided: false,
        }),
        37 => Some(Pace {
            accepted_ms: at(20),
            assigned_ms: Some(at(19)),
            noticed_ms: None,
            decided: false,
        }),
        63 => Some(Pace {
            accepted_ms: at(40),
            assigned_ms: Some(at(39)),
            noticed_ms: Some(at(2)),
            decided: true,
        }),
        89 => Some(Pace {
            accepted_ms: at(6),
            assigned_ms: Some(at(5)),
            noticed_ms: Some(at(1)),
            decided: true,
        }),
        _ => None,
    }
}

/// What a month's lifecycle phase does to a person after that month's
/// payouts: the county federation's actions, the person's own
/// applications on the platform and the registries' reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// Nothing.
    None,
    /// The certificate frozen.
    Frozen,
    /// Frozen, and the freeze lifted the same month.
    FrozenThenUnfrozen,
    /// An earlier month's freeze lifted.
    Unfrozen,
    /// Re-assessed at another level.
    Reassessed {
        /// The new level.
        level: u8,
    },
    /// The certificate lost and reissued (挂失补办) on the person's
    /// application on the platform: the next B number.
    Reissued,
    /// A multiple disability's other categories cancelled
    /// (注销部分残疾类别): a new certificate with the one that remains, at
    /// the same level, valid ten years from that day.
    PartlyCancelled {
        /// The category that remains.
        category: u8,
    },
    /// Renewed (换领) in the last year of its ten years, applied for on the
    /// platform: valid ten years from that day. (The demo's certificates
    /// are all new; the certificate system is told this one was made nine
    /// and a half years ago.)
    Renewed,
    /// A renewal applied for long before the last year: refused (不予办理),
    /// nothing changes.
    RenewalTooEarly,
    /// Died (registered by public security).
    Died,
    /// Died on the 25th of the month before, registered only after this
    /// month's payouts: this month was paid after the death, and is to be
    /// recovered (追回).
    DiedLastMonth,
    /// The household's 低保 status changed.
    Dibao(&'static str),
    /// The household registration moved to Zichuan (淄川, 370302), in the
    /// second province, and the certificate with it (跨省迁移), applied for
    /// on that province's platform: paid by the old province for this
    /// month, by the new one from the next.
    Moved,
}

/// The county people move to: Zichuan, Shandong (the second province).
pub(super) const MOVED_TO: &str = "370302";

/// A person's certificate and household after the changes of some months.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct State {
    pub(super) category: u8,
    pub(super) level: u8,
    pub(super) dibao: &'static str,
    pub(super) frozen: bool,
    pub(super) dead: bool,
    /// Reissues since the certificate was last made (the B suffix).
    pub(super) reissues: u32,
}

impl Applicant {
    /// Whether the application reaches the certificate system (is
    /// accepted there).
    pub(super) fn accepted(&self) -> bool {
        self.bad.is_none()
            || self.bad == Some("bank card fails its check digit")
            || self.bad == Some("no social security card")
    }
    pub(super) fn certified(&self) -> bool {
        self.accepted() && self.pace.is_none_or(|p| p.decided)
    }

    /// The stage an application waits in, and when it is due, if the
    /// county offices hold it in one with a limit.
    pub(super) fn waiting(&self, calendar: &Calendar) -> Option<(&'static str, i64)> {
        let p = self.pace.filter(|p| self.accepted() && !p.decided)?;
        let (stage, entered) = match (p.assigned_ms, p.noticed_ms) {
            (None, _) => ("RECEIVED", p.accepted_ms),
            (Some(a), None) => ("ASSESSOR_NAMED", a),
            (Some(_), Some(n)) => ("NOTICE_COMPLETED", n),
        };
        let limit = LIMITS.iter().find(|(s, _)| *s == stage)?.1;
        Some((
            stage,
            end_of_day_ms(calendar.add_working_days(china_day(entered), limit)),
        ))
    }

    /// The stages of the application that missed their limit by `now`
    /// (open after it, or ended after it), counted on `calendar`; the
    /// decision, when taken, is taken by `now`.
    pub(super) fn breaches(&self, now: i64, calendar: &Calendar) -> Vec<&'static str> {
        let Some(p) = self.pace.filter(|_| self.accepted()) else {
            return Vec::new();
        };
        let decided = p.decided.then_some(now);
        let steps = [
            ("RECEIVED", Some(p.accepted_ms)),
            ("ASSESSOR_NAMED", p.assigned_ms),
            ("NOTICE_COMPLETED", p.noticed_ms),
            ("DECIDED", decided),
        ];
        let mut out = Vec::new();
        for (i, (stage, entered)) in steps.iter().enumerate() {
            let (Some(entered), Some((_, limit))) =
                (entered, LIMITS.iter().find(|(s, _)| s == stage))
            else {
                continue;
            };
            let due = end_of_day_ms(calendar.add_working_days(china_day(*entered), *limit));
            let ended = steps[i + 1..].iter().find_map(|(_, t)| *t).unwrap_or(now);
            if ended > due {
                out.push(*stage);
            }
        }
        out
    }
    pub(super) fn card_loaded(&self) -> bool {
        self.certified() && self.has_card
    }
    pub(super) fn subsidy_request(&self) -> bool {
        self.certified() && self.card_ok
    }
    /// Whether the subsidies system pays the person: a subsidy applied
    /// for and, where the province pays through the card, a card whose
    /// account the card system reported (without one the payments wait).
    pub(super) fn payable(&self, rates: &crate::sim::subsidies::Rates) -> bool {
        self.subsidy_request() && (!rates.pay_to_card_account || self.card_loaded())
    }
    pub(super) fn pension(&self) -> bool {
        // Under 16, enrolled too: from the month of the 16th birthday.
        self.certified() && self.pension != "EMPLOYEE_SCHEME" && self.level <= 2
    }
    pub(super) fn employment(&self) -> bool {
        self.certified() && self.wants_work && self.working_age
    }

    /// The person as the rules see them in `month`: after the changes of
    /// the months before (each month's changes come after its payouts: they
    /// are in force from the next month), and dead in the month of a death
    /// registered late (they died the month before).
    pub(super) fn state_at(&self, month: usize) -> State {
        let mut s = self.state_before(month);
        s.dead |= self.changes.contains(&(month, Change::DiedLastMonth));
        s
    }

    /// The person as the systems knew them when `month` was paid: after
    /// the changes of the months before.
    pub(super) fn state_before(&self, month: usize) -> State {
        let mut s = State {
            category: self.category,
            level: self.level,
            dibao: self.dibao,
            frozen: false,
            dead: false,
            reissues: 0,
        };
        for (_, c) in self.changes.iter().take_while(|(m, _)| *m < month) {
            match *c {
                Change::None
                | Change::FrozenThenUnfrozen
                | Change::Renewed
                | Change::RenewalTooEarly
                | Change::Moved => {}
                Change::Frozen => s.frozen = true,
                Change::Unfrozen => s.frozen = false,
                Change::Reassessed { level } => (s.level, s.reissues) = (level, 0),
                Change::PartlyCancelled { category } => (s.category, s.reissues) = (category, 0),
                Change::Reissued => s.reissues += 1,
                Change::Died | Change::DiedLastMonth => s.dead = true,
                Change::Dibao(d) => s.dibao = d,
            }
        }
        s
    }

    /// The change the lifecycle phase of `month` makes to the `i`th
    /// person: about a third of those with a loaded card and a subsidy
    /// request, by turns; a frozen certificate is unfrozen a month or two
    /// later; nothing more happens to the dead.
    pub(super) fn pick_change(
        &self,
        rates: &crate::sim::subsidies::Rates,
        i: usize,
        month: usize,
    ) -> Change {
        let s = self.state_before(month);
        if !(self.card_loaded() && self.subsidy_request()) || s.dead {
            return Change::None;
        }
        // A death registered late, in the month after a move, would be
        // registered in the new province for a month the old one paid:
        // the old province's register never hears it (see the README).
        let moved_last_month = month > 0 && self.changes.contains(&(month - 1, Change::Moved));
        if s.frozen {
            return if (i + month) % 2 == 1 {
                Change::Unfrozen
            } else {
                Change::None
            };
        }
        match (i + 7 * month) % 25 {
            3 => Change::Frozen,
            5 => Change::Reissued,
            10 => Change::RenewalTooEarly,
            15 if month > 0 => Change::Renewed,
            8 => Change::FrozenThenUnfrozen,
            13 => Change::Reassessed {
                level: s.level % 4 + 1,
            },
            18 => Change::Died,
            20 if month > 0 && !moved_last_month => Change::DiedLastMonth,
            // Those paid now move (a recipient stays one in the new
            // province, which decides the same amounts).
            21 if self.can_move
                && self.province_at(month) == 0
                && self.amounts_as(rates, s) != (0, 0) =>
            {
                Change::Moved
            }
            1 if s.category == 7 => Change::PartlyCancelled { category: 4 },
            23 => Change::Dibao(if s.dibao == "DIBAO" { "NONE" } else { "DIBAO" }),
            _ => Change::None,
        }
    }

    /// What the rules give the person for `month` (from 0), in fen:
    /// (living, care). From the month the certificate is issued (month 0);
    /// nothing from the month after a freeze or a death, until the month
    /// after the freeze is lifted; decided again from the month after a
    /// re-assessment or a 低保 change. A recipient only stays one: a
    /// person the subsidies system never took is not taken by a change.
    pub(super) fn amounts(&self, rates: &crate::sim::subsidies::Rates, month: usize) -> (i64, i64) {
        self.amounts_as(rates, self.state_at(month))
    }

    /// What the rules give the person as they are in `s`.
    fn amounts_as(&self, rates: &crate::sim::subsidies::Rates, s: State) -> (i64, i64) {
        use crate::sim::subsidies::entitlement;
        // A multiple disability includes an intellectual or mental one
        // while it is a multiple disability.
        let rule = |category: u8, level: u8, dibao: &str| {
            entitlement(
                rates,
                category,
                level,
                dibao,
                self.care,
                self.includes_im && category == 7,
            )
        };
        if !self.payable(rates)
            || rule(self.category, self.level, self.dibao) == (0, 0)
            || s.frozen
            || s.dead
        {
            return (0, 0);
        }
        rule(s.category, s.level, s.dibao)
    }

    /// The ids of the payments of `month` (`period`) made to a person who
    /// had died before it: what the list said when the month was paid (the
    /// death not yet known), to be recovered.
    pub(super) fn paid_after_death(
        &self,
        rates: &crate::sim::subsidies::Rates,
        month: usize,
        period: &str,
    ) -> Vec<String> {
        if !self.changes.contains(&(month, Change::DiedLastMonth)) {
            return Vec::new();
        }
        let (living, care) = self.amounts_as(rates, self.state_before(month));
        [("LIVING", living), ("CARE", care)]
            .into_iter()
            .filter(|(_, fen)| *fen > 0)
            .map(|(ty, _)| payment_id(ty, &self.id, period))
            .collect()
    }

    /// The certificate number the person holds in `month` (after the
    /// earlier months' changes).
    pub(super) fn number_at(&self, month: usize) -> String {
        let s = self.state_at(month);
        match s.reissues {
            0 => format!("{}{}{}", self.id, s.category, s.level),
            n => format!("{}{}{}B{n}", self.id, s.category, s.level),
        }
    }

    /// The certificate function the card carries after the changes of the
    /// months before `month`, if any: the number and valid-until date
    /// (`YYYYMMDD`); nothing while frozen or once dead. `days[k]` is the
    /// day of month `k`'s changes (month 0's: the day of issue): a
    /// certificate made again on re-assessment is valid ten years from
    /// that day, a reissued one keeps the validity it had.
    pub(super) fn card_at(
        &self,
        month: usize,
        days: &[chrono::NaiveDate],
    ) -> Option<(String, String)> {
        let s = self.state_at(month);
        if !self.card_loaded() || s.frozen || s.dead {
            return None;
        }
        let made = self
            .changes
            .iter()
            .take_while(|(m, _)| *m < month)
            .filter(|(_, c)| {
                matches!(
                    c,
                    Change::Reassessed { .. } | Change::PartlyCancelled { .. } | Change::Renewed
                )
            })
            .map(|(m, _)| *m)
            .last()
            .unwrap_or(0);
        let valid_until = days
            .get(made)
            .and_then(|d| d.checked_add_months(chrono::Months::new(120)))
            .map_or(String::new(), |d| d.format("%Y%m%d").to_string());
        Some((self.number_at(month), valid_until))
    }

    /// The applications the person filed after the first one, each with
    /// whether the rules grant it: (application id, granted).
    pub(super) fn later_applications(&self) -> Vec<(String, bool)> {
        self.changes
            .iter()
            .filter_map(|(m, c)| match c {
                Change::Reissued => Some((self.later_id("REISSUE", *m), true)),
                Change::Renewed => Some((self.later_id("RENEW", *m), true)),
                Change::RenewalTooEarly => Some((self.later_id("RENEW", *m), false)),
                Change::Moved => Some((self.later_id("MIGRATE", *m), true)),
                _ => None,
            })
            .collect()
    }

    /// The province (index) whose systems act for the person in `month`:
    /// the home one until the month after a move.
    pub(super) fn province_at(&self, month: usize) -> usize {
        match self
            .changes
            .iter()
            .any(|(m, c)| *c == Change::Moved && *m < month)
        {
            true => 1,
            false => self.home,
        }
    }

    /// The county of the household registration in `month`.
    pub(super) fn region_at(&self, month: usize) -> &str {
        match self.province_at(month) != self.home {
            true => MOVED_TO,
            false => &self.region,
        }
    }

    fn later_id(&self, request: &str, month: usize) -> String {
        format!("{}-{}{month}", self.application_id, &request[..2])
    }

    /// The form of the person's application on the platform in `month`
    /// about the certificate they hold: `REISSUE` of a lost one (挂失补办),
    /// `RENEW` (换领), or `MIGRATE` to [`MOVED_TO`] (迁移, on the new
    /// province's platform, with the account subsidies are to be paid to).
    pub(super) fn later_form(&self, request: &str, month: usize) -> Vec<u8> {
        let moving = request == "MIGRATE";
        let region = if moving {
            MOVED_TO
        } else {
            self.region_at(month)
        };
        let form = json!({
            "application_id": self.later_id(request, month),
            "submitted_at": crate::sim::clock::china_now().to_rfc3339(),
            "request": request,
            "applicant": {
                "id_no": self.id, "name": self.name, "phone": null,
                "region_code": region, "address": null
            },
            "target_region_code": if moving { Some(MOVED_TO) } else { None },
            "bank": self.bank.as_deref().and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok()),
            "certificate_no": self.number_at(month),
            "guardian": self.guardian.as_deref().and_then(|g| serde_json::from_str::<serde_json::Value>(g).ok()),
            "dibao": self.state_at(month).dibao,
            "needs_long_term_care": self.care,
        });
        serde_json::to_vec(&form).unwrap_or_default()
    }
}

/// The id of a payment of the payout lists: subsidy type, holder, month
/// (`LIVING-<ID>-YYYYMM`), as the two-subsidies system names it.
pub(super) fn payment_id(subsidy_type: &str, holder: &str, period: &str) -> String {
    format!("{subsidy_type}-{holder}-{}", period.replace('-', ""))
}

/// Makes the applicants and their forms; `calendar` dates the paces. With
/// two `provinces`, the people of Shandong (37) file with the second one
/// and the others may move there.
pub(super) fn applicants(
    n: usize,
    seed: u64,
    calendar: &Calendar,
    provinces: usize,
) -> Vec<(Applicant, Vec<u8>)> {
    let mut rng = Rng::new(seed);
    // The certificate system dates issues in China's time zone; ages must
    // be counted on the same day.
    let today = crate::domain::china_now().date_naive();
    // One person, one ID number: synthetic numbers collide now and then
    // (county × birth date × sequence), and a second person with the same
    // number would be refused by the certificate system, rightly.
    let mut seen = std::collections::HashSet::with_capacity(n);
    let now = crate::store::now_ms();
    // Accepted this many days ago, the assessor (3 working days) is due by
    // the end of the next working day.
    let day = china_day(now);
    let soon = calendar.add_working_days(day, 1);
    let soon_days = (0..30)
        .find(|k| {
            let due = calendar.add_working_days(day - chrono::Days::new(*k), 3);
            due >= day && due <= soon
        })
        .unwrap_or(0) as i64;
    (0..n)
        .map(|i| {
            let p = loop {
                let p = synth::person(&mut rng);
                if seen.insert(p.id.clone()) {
                    break p;
                }
            };
            let bad: Option<&'static str> = match rng.below(1000) {
                0..=9 => Some("ID number fails its check digit"),
                10..=19 => Some("bank card fails its check digit"),
                20..=24 => Some("name missing"),
                25..=29 => Some("no social security card"),
                _ => None,
            };
            let mut id = p.id.clone();
            if bad == Some("ID number fails its check digit") {
                let last = id.pop().unwrap_or('0');
                id.push(if last == '1' { '2' } else { '1' });
            }
            let mut card = p.card.clone();
            if bad == Some("bank card fails its check digit") {
                let last = card.pop().unwrap_or('0');
                card.push(char::from(b'0' + (last as u8 - b'0' + 1) % 10));
            }
            let name = if bad == Some("name missing") {
                "  ".to_string()
            } else {
                p.name.clone()
            };
            let dibao = *rng.pick(&[
                "NONE",
                "NONE",
                "NONE",
                "DIBAO",
                "DIBAO",
                "NEAR_DIBAO",
                "TEKUN",
            ]);
            let care = p.level <= 2 && rng.chance(85);
            let includes_im = p.category == 7 && rng.chance(50);
            let pension = *rng.pick(&["NONE", "NONE", "RESIDENT_SCHEME", "EMPLOYEE_SCHEME"]);
            let wants_employment = rng.chance(20);
            let wants_training = rng.chance(10);
            let age = today.years_since(p.birth).unwrap_or(0);
            let male = crate::domain::ResidentId::parse(&p.id).is_ok_and(|r| r.is_male());
            let application_id = format!("SX-{seed:04}-{i:08}");
            // Through a guardian where the rules want one: a minor, or an
            // intellectual or mental disability (the assessment finds it).
            let guardian =
                synth::needs_guardian(&p, today, includes_im).then(|| synth::guardian(&p));
            let home = usize::from(provinces > 1 && p.region.starts_with("37"));
            // One in four people of Shanxi lives in Zichuan and applies
            // there (跨省通办), with a residence permit (居住证).
            let filed_in = match provinces > 1 && p.region.starts_with("14") && i % 4 == 3 {
                true => 1,
                false => home,
            };
            let (residence, permit) = match filed_in != home {
                true => (
                    Some(MOVED_TO),
                    Some(format!("{MOVED_TO}2024{:08}", i % 100_000_000)),
                ),
                false => (None, None),
            };
            let bank =
                json!({"account_no": card, "bank_code": p.bank_code, "account_name": p.name});
            let form = json!({
                "application_id": application_id,
                "submitted_at": crate::domain::china_now().to_rfc3339(),
                "request": "NEW",
                "applicant": {
                    "id_no": id, "name": name,
                    "phone": format!("13{:09}", rng.below(1_000_000_000)),
                    "region_code": p.region, "address": null,
                    "residence_region_code": residence, "residence_permit_no": permit,
                },
                "guardian": guardian,
                "certificate_no": null,
                "target_region_code": null,
                "bank": bank,
                "dibao": dibao,
                "needs_long_term_care": care,
                "wants_employment": wants_employment,
                "wants_training": wants_training,
                "pension": pension,
            });
            let a = Applicant {
                application_id,
                id,
                name: p.name.clone(),
                region: p.region.clone(),
                home,
                can_move: provinces > 1 && home == 0,
                filed_in,
                category: p.category,
                level: p.level,
                bad,
                has_card: bad != Some("no social security card"),
                card_ok: bad != Some("bank card fails its check digit"),
                dibao,
                care,
                includes_im,
                pension,
                working_age: age >= 16 && age < if male { 60 } else { 55 },
                wants_work: wants_employment || wants_training,
                guardian: guardian.map(|g| g.to_string()),
                bank: (provinces > 1 && home == 0).then(|| bank.to_string()),
                filed_at: 0,
                changes: Vec::new(),
                pace: pace_of(i, now, soon_days),
            };
            (a, serde_json::to_vec(&form).unwrap_or_default())
        })
        .collect()
}
