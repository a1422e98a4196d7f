//! A payout bank: payment files in, status reports out, through a shared
//! directory (the bank connector's `directory`), as banks' bulk payment
//! channels work.
//!
//! It picks up `*.pain001.xml` files from `<dir>/out` once their checksum
//! file is there and matches (the hub's outbound directory), and answers
//! each with a `pain.002` in `<dir>/in` (`<MsgId>.pain002.xml` and its
//! checksum file, the hub's inbound directory); the file it read moves to
//! `<dir>/out/processed/`.
//!
//! Its rules:
//! - a file whose `NbOfTxs` or `CtrlSum` does not match its transfers, or
//!   that cannot be read, is refused whole: `GrpSts` `RJCT`, reason `FF01`;
//! - a file whose `MsgId` it already processed is refused whole: `AM05`
//!   (duplicate), and nothing in it is paid;
//! - otherwise each transfer is checked against the account book: `AC01`
//!   no such account, `AC04` closed, `AC06` blocked, `BE01` name and
//!   account do not match, `MD07` holder deceased; others are paid (`ACSC`)
//!   and the group status is `ACSC`, `PART` or `RJCT`.
//!
//! Files can also be uploaded: `POST /payments/files` with the file as the
//! body, its name in `X-File-Name` and its SHA-256 in `X-Checksum-SHA256`
//! (a bearer token if one is set); an upload whose checksum does not match
//! is refused (422) and nothing is written; a good one lands in `<dir>/out`
//! with its checksum file and is handled like a dropped file.
//!
//! With an empty account book every account is open and names are not
//! checked. Each paid payment is an effect in the ledger keyed by its
//! `EndToEndId`: a payment id paid twice shows as a repeat.

use super::{with_common, Common};
use crate::formats::layout::Layout;
use crate::formats::pain::{self, StatusReport, TxStatus};
use axum::response::IntoResponse;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An account's state in the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountState {
    /// Payments are credited.
    Open,
    /// Closed: AC04.
    Closed,
    /// Blocked: AC06.
    Blocked,
    /// The holder died: MD07.
    Deceased,
}

/// The bank's state.
pub struct Bank {
    /// Faults, ledger, counters.
    pub common: Arc<Common>,
    dir: PathBuf,
    book: Mutex<HashMap<String, (String, AccountState)>>,
    seen: Mutex<HashSet<String>>,
    /// Payments credited per end-to-end id (a second credit is a double payment).
    credited: Mutex<HashMap<String, u32>>,
    /// Payment files answered.
    answered: std::sync::atomic::AtomicUsize,
    /// Files in a delimited or fixed-width layout instead of ISO 20022.
    layout: Option<Arc<Layout>>,
    /// The bearer token uploads must carry, if any.
    token: Mutex<Option<String>>,
}

impl Bank {
    /// A bank exchanging files under `dir`.
    pub fn new(dir: &Path) -> Arc<Bank> {
        Bank::make(dir, None)
    }

    /// A bank that takes payment files in `layout` and answers with the
    /// layout's result files.
    pub fn with_layout(dir: &Path, layout: Arc<Layout>) -> Arc<Bank> {
        Bank::make(dir, Some(layout))
    }

    fn make(dir: &Path, layout: Option<Arc<Layout>>) -> Arc<Bank> {
        Arc::new(Bank {
            common: Common::new("bank"),
            dir: dir.to_path_buf(),
            book: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashSet::new()),
            credited: Mutex::new(HashMap::new()),
            answered: Default::default(),
            layout,
            token: Mutex::new(None),
        })
    }

    /// Uploads must carry `Authorization: Bearer <token>`.
    pub fn require_token(&self, token: &str) {
        *self.token.lock().unwrap() = Some(token.to_string());
    }

    /// Opens (or sets the state of) an account held by `name`.
    pub fn account(&self, account: &str, name: &str, state: AccountState) {
        self.book
            .lock()
            .unwrap()
            .insert(account.to_string(), (name.to_string(), state));
    }

    /// An account's state, if the book has it.
    pub fn account_state(&self, account: &str) -> Option<AccountState> {
        self.book.lock().unwrap().get(account).map(|a| a.1)
    }

    /// Payment ids credited more than once (never, if the hub is right).
    pub fn paid_twice(&self) -> Vec<String> {
        self.credited
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Amount credited per payment id.
    pub fn credited(&self) -> HashMap<String, u32> {
        self.credited.lock().unwrap().clone()
    }

    /// The routes: `POST /payments/files` (uploads), `/_ledger`, `/_faults`.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        let app = axum::Router::new()
            .route("/payments/files", axum::routing::post(upload))
            .with_state(self.clone());
        with_common(app, self.common.clone())
    }

    /// Whether `name` is a payment file this bank takes.
    fn takes(&self, name: &str) -> bool {
        !name.starts_with('.')
            && !name.contains(['/', '\\'])
            && match &self.layout {
                Some(l) => l.is_payment_file(name),
                None => name.ends_with(".pain001.xml"),
            }
    }

    /// Handles every complete file waiting; returns how many.
    pub fn poll_once(&self) -> Result<usize, String> {
        let inbox = self.dir.join("out");
        let answers = self.dir.join("in");
        let processed = inbox.join("processed");
        for d in [&inbox, &answers, &processed] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let mut names: Vec<String> = std::fs::read_dir(&inbox)
            .map_err(|e| format!("{}: {e}", inbox.display()))?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| match &self.layout {
                Some(l) => l.is_payment_file(n),
                None => n.ends_with(".pain001.xml") && !n.starts_with('.'),
            })
            .collect();
        names.sort();
        let mut n = 0;
        for name in names {
            let sum = inbox.join(format!("{name}.sha256"));
            let Ok(want) = std::fs::read_to_string(&sum) else {
                continue; // still being written
            };
            let path = inbox.join(&name);
            let io = |e: std::io::Error| format!("{}: {e}", path.display());
            if crate::connectors::file::checksum_line_of(&path, &name).map_err(io)? != want {
                continue; // the checksum file is ahead of the file: not yet complete
            }
            let (answer, body) = match &self.layout {
                None => {
                    // Read as a stream: a file of any size takes a buffer.
                    let file = std::fs::File::open(&path).map_err(io)?;
                    let (report, txs) =
                        self.decide(std::io::BufReader::with_capacity(1 << 16, file));
                    let created = crate::domain::china_now()
                        .format("%Y-%m-%dT%H:%M:%S")
                        .to_string();
                    let xml = pain::write_pain002(Vec::new(), &report, &created, txs)
                        .map_err(|e| e.to_string())?;
                    let answer = format!(
                        "{}.pain002.xml",
                        if report.original_msg_id.is_empty() {
                            name.trim_end_matches(".pain001.xml")
                        } else {
                            &report.original_msg_id
                        }
                    );
                    (answer, xml)
                }
                Some(l) => {
                    let bytes = std::fs::read(&path).map_err(io)?;
                    self.answer_layout(l, &name, &bytes)?
                }
            };
            // A second answer to the same MsgId (a duplicate file) gets its own name.
            let answer = if answers.join(&answer).exists() {
                format!("{}-{}", crate::store::now_ms(), answer)
            } else {
                answer
            };
            crate::connectors::file::write_with_checksum(&answers, &answer, &body)
                .map_err(|e| e.to_string())?;
            std::fs::rename(inbox.join(&name), processed.join(&name)).map_err(|e| e.to_string())?;
            std::fs::rename(&sum, processed.join(format!("{name}.sha256")))
                .map_err(|e| e.to_string())?;
            n += 1;
            self.answered
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(n)
    }

    /// How many payment files the bank has answered.
    pub fn answered(&self) -> usize {
        self.answered.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Watches the directory until the process ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.poll_once()).await {
                Ok(Err(e)) => eprintln!("bank simulator: {e}"),
                Err(e) => eprintln!("bank simulator: {e}"),
                Ok(Ok(_)) => {}
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The status report for one pain.001 file.
    pub fn decide(&self, file: impl std::io::BufRead) -> (StatusReport, Vec<TxStatus>) {
        let mut txs = Vec::new();
        let read = pain::read_pain001(file, |t| txs.push(t)).map_err(|e| e.to_string());
        self.decide_read(read, &txs)
    }

    /// A payment file in the bank's layout, answered with a result file in
    /// the same layout: (its name, its bytes).
    fn answer_layout(
        &self,
        l: &Layout,
        name: &str,
        bytes: &[u8],
    ) -> Result<(String, Vec<u8>), String> {
        let mut txs = Vec::new();
        let read = l.read_file(&l.payments, bytes).map(|(h, details, t)| {
            let batch_id = t
                .get("batch_id")
                .or_else(|| h.get("batch_id"))
                .cloned()
                .or_else(|| {
                    let (pre, post) = l.payment_file.split_once("{batch_id}")?;
                    Some(name.strip_prefix(pre)?.strip_suffix(post)?.to_string())
                })
                .unwrap_or_default();
            let (count, total_fen) = crate::formats::layout::declared(&h, &t);
            for (_, d) in details {
                let s = |k: &str| d.get(k).cloned().unwrap_or_default();
                txs.push(pain::ReadTransfer {
                    end_to_end_id: s("payment_id"),
                    amount_fen: crate::formats::layout::amount_of(&d),
                    currency: "CNY".into(),
                    creditor_name: s("creditor_name"),
                    creditor_account: s("creditor_account"),
                });
            }
            pain::ReadHeader {
                msg_id: batch_id,
                count,
                total_fen,
            }
        });
        let (report, statuses) = self.decide_read(read, &txs);
        let now = crate::domain::china_now();
        let created = now.format("%Y-%m-%dT%H:%M:%S").to_string();
        let date = now.format("%Y%m%d").to_string();
        let batch_id = if report.original_msg_id.is_empty() {
            name.to_string()
        } else {
            report.original_msg_id.clone()
        };
        let group = |k: &str| -> Option<String> {
            Some(match k {
                "batch_id" => batch_id.clone(),
                "created" => created.clone(),
                "date" => date.clone(),
                "count" => report.original_count.unwrap_or(0).to_string(),
                "total_fen" => report.original_total_fen.unwrap_or(0).to_string(),
                "total" => pain::amount(report.original_total_fen.unwrap_or(0)),
                "status" => report.group_status.clone().unwrap_or_default(),
                "reason_code" => report.group_reason.clone().unwrap_or_default(),
                _ => return None,
            })
        };
        let mut out = Vec::new();
        let mut line = 1;
        if !l.results.header.is_empty() {
            l.write_line(&l.results.header, line, &group, &mut out)?;
            line += 1;
        }
        for (i, st) in statuses.iter().enumerate() {
            let t = &txs[i];
            let detail = |k: &str| -> Option<String> {
                Some(match k {
                    "seq" => (i + 1).to_string(),
                    "payment_id" => st.end_to_end_id.clone(),
                    "creditor_account" => t.creditor_account.clone(),
                    "amount_fen" => t.amount_fen.unwrap_or(0).to_string(),
                    "amount" => pain::amount(t.amount_fen.unwrap_or(0)),
                    "status" => st.status.clone(),
                    "reason_code" => st.reason.clone().unwrap_or_default(),
                    _ => return None,
                })
            };
            l.write_line(&l.results.detail, line, &detail, &mut out)?;
            line += 1;
        }
        if !l.results.trailer.is_empty() {
            l.write_line(&l.results.trailer, line, &group, &mut out)?;
        }
        Ok((l.result_file_name(&batch_id), out))
    }

    /// The bank's decision on a file as read: refused whole, or each
    /// transfer paid or rejected by the account book.
    fn decide_read(
        &self,
        read: Result<pain::ReadHeader, String>,
        txs: &[pain::ReadTransfer],
    ) -> (StatusReport, Vec<TxStatus>) {
        let msg_id = format!("BANK-{}", crate::store::now_ms());
        let refuse = |orig: &str, code: &str| StatusReport {
            msg_id: msg_id.clone(),
            original_msg_id: orig.to_string(),
            original_count: None,
            original_total_fen: None,
            group_status: Some("RJCT".into()),
            group_reason: Some(code.into()),
        };
        let h = match read {
            Ok(h) => h,
            Err(e) => {
                self.common.apply("", "refused", "", format!("FF01 {e}"));
                return (refuse("", "FF01"), Vec::new());
            }
        };
        let total: Option<i64> = txs.iter().map(|t| t.amount_fen).sum();
        if h.count != Some(txs.len() as i64) || h.total_fen.is_none() || h.total_fen != total {
            self.common
                .apply("", "refused", &h.msg_id, "FF01 totals".into());
            return (refuse(&h.msg_id, "FF01"), Vec::new());
        }
        if !self.seen.lock().unwrap().insert(h.msg_id.clone()) {
            self.common
                .apply("", "refused", &h.msg_id, "AM05 duplicate file".into());
            return (refuse(&h.msg_id, "AM05"), Vec::new());
        }
        let book = self.book.lock().unwrap();
        let mut out = Vec::with_capacity(txs.len());
        let mut credited = self.credited.lock().unwrap();
        for t in txs {
            let reason = if t.currency != "CNY" || t.amount_fen.is_none_or(|a| a <= 0) {
                Some("AM03")
            } else if book.is_empty() {
                None
            } else {
                match book.get(&t.creditor_account) {
                    None => Some("AC01"),
                    Some((_, AccountState::Closed)) => Some("AC04"),
                    Some((_, AccountState::Blocked)) => Some("AC06"),
                    Some((_, AccountState::Deceased)) => Some("MD07"),
                    Some((name, AccountState::Open)) if name != &t.creditor_name => Some("BE01"),
                    Some(_) => None,
                }
            };
            if reason.is_none() {
                *credited.entry(t.end_to_end_id.clone()).or_default() += 1;
                self.common.apply(
                    &t.end_to_end_id,
                    "paid",
                    &t.end_to_end_id,
                    pain::amount(t.amount_fen.unwrap_or(0)),
                );
            }
            out.push(TxStatus {
                end_to_end_id: t.end_to_end_id.clone(),
                status: if reason.is_some() {
                    "RJCT".into()
                } else {
                    "ACSC".into()
                },
                reason: reason.map(str::to_string),
            });
        }
        let rejected = out.iter().filter(|t| t.status == "RJCT").count();
        let group = match rejected {
            0 => "ACSC",
            n if n == out.len() => "RJCT",
            _ => "PART",
        };
        (
            StatusReport {
                msg_id,
                original_msg_id: h.msg_id,
                original_count: h.count,
                original_total_fen: h.total_fen,
                group_status: Some(group.into()),
                group_reason: None,
            },
            out,
        )
    }
}

/// `POST /payments/files`: one payment file, written into the directory the
/// bank reads (with its checksum file, atomically) once its SHA-256 checks.
async fn upload(
    axum::extract::State(b): axum::extract::State<Arc<Bank>>,
    h: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use super::{header, refuse};
    use axum::http::StatusCode;
    if let Some(t) = b.token.lock().unwrap().clone() {
        if !super::bearer_ok(&h, &t) {
            return refuse(StatusCode::UNAUTHORIZED, "bad credentials");
        }
    }
    let name = header(&h, "x-file-name").to_string();
    if !b.takes(&name) {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("X-File-Name {name:?} is not a payment file name this bank takes"),
        );
    }
    let sum = crate::connectors::file::sha256_hex(&body);
    if header(&h, "x-checksum-sha256") != sum {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{name}: X-Checksum-SHA256 does not match the body (SHA-256 {sum})"),
        );
    }
    let dir = b.dir.join("out");
    let written = tokio::task::spawn_blocking({
        let (dir, name) = (dir.clone(), name.clone());
        move || {
            std::fs::create_dir_all(&dir)?;
            crate::connectors::file::write_with_checksum(&dir, &name, &body)
        }
    })
    .await;
    match written {
        Ok(Ok(())) => (
            StatusCode::CREATED,
            axum::Json(serde_json::json!({ "received": name, "sha256": sum })),
        )
            .into_response(),
        Ok(Err(e)) => refuse(StatusCode::INTERNAL_SERVER_ERROR, format!("{name}: {e}")),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
