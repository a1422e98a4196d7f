//! The exchange log (存证): every durable fact that matters as evidence, in
//! an append-only chain where each entry carries the hash of the one
//! before, sealed now and then by a signature.
//!
//! Facts are written by the store's own write paths, in the transaction
//! that makes them durable: the records of an ingest (`received`), the
//! deliveries of a settle with the digest of each answer (`delivered`), a
//! payment file recorded as sent with its SHA-256 (`payment_file`), the
//! bank's results (`bank_results`) and every operator action (`operator`).
//! One entry per transaction, listing its facts, so the log costs one row
//! per commit, not one per record.
//!
//! A fact is written unchained (named in `evidence_pending`); the chainer
//! ([`Store::chain_evidence`], run by the hub every second, one hub at a
//! time on PostgreSQL) gives each its position in commit order, the hash of
//! the entry before and its own hash:
//!
//! `hash = SHA-256("tongban-evidence-1\0" ‖ prev ‖ pos ‖ at ‖ len kind ‖ kind ‖ len body ‖ body)`
//!
//! (integers as 8 bytes big-endian; the first entry's `prev` is 32 zero
//! bytes). A seal signs `"tongban-evidence-seal-1\0" ‖ pos ‖ at ‖ hash` with
//! Ed25519 or SM2 ([`SealKey`]), and so vouches for every entry up to
//! `pos`. Facts, the chain and seals cannot be updated or deleted (a
//! trigger refuses);
//! one who drops the trigger and changes history is found by
//! [`Verifier`]: the changed entry no longer matches its hash, or, if every
//! hash after it was made again, the chain no longer matches the seal.
//!
//! Bodies hold no personal data in the clear: source ids and operators'
//! reasons are masked ([`crate::domain::mask::text`]), records are kept as
//! digests.

pub(in crate::store) mod postgres;
pub(in crate::store) mod sqlite;

use super::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// A digest of 32 bytes.
pub type Hash = [u8; 32];

/// The `prev` of the first entry.
pub const GENESIS: Hash = [0; 32];

/// A stored hash (32 bytes; anything else reads as zeros, and so fails
/// verification).
pub(in crate::store) fn hash_of(v: Vec<u8>) -> Hash {
    v.try_into().unwrap_or([0; 32])
}

/// The hash of an entry.
pub fn entry_hash(prev: &Hash, pos: i64, at: i64, kind: &str, body: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(b"tongban-evidence-1\0");
    h.update(prev);
    h.update(pos.to_be_bytes());
    h.update(at.to_be_bytes());
    h.update((kind.len() as u64).to_be_bytes());
    h.update(kind.as_bytes());
    h.update((body.len() as u64).to_be_bytes());
    h.update(body.as_bytes());
    h.finalize().into()
}

/// What a seal signs.
pub fn seal_message(pos: i64, at: i64, hash: &Hash) -> Vec<u8> {
    let mut m = b"tongban-evidence-seal-1\0".to_vec();
    m.extend_from_slice(&pos.to_be_bytes());
    m.extend_from_slice(&at.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

pub use crate::domain::{hex, sha256_hex, unhex};

/// One chained entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its position in the chain, from 1.
    pub pos: i64,
    /// When the fact was written, ms since the epoch.
    pub at: i64,
    /// `received`, `delivered`, `payment_file`, `bank_results`, `operator`.
    pub kind: String,
    /// The facts, as JSON text (hashed as these bytes).
    pub body: String,
    /// The hash of the entry before.
    pub prev: Hash,
    /// Its own hash.
    pub hash: Hash,
}

/// A signature over the chain up to an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seal {
    /// The entry sealed (and every one before it).
    pub pos: i64,
    /// When, ms since the epoch.
    pub at: i64,
    /// That entry's hash.
    pub hash: Hash,
    /// `ed25519` or `sm2`.
    pub algorithm: String,
    /// The signing key's id ([`key_id`]).
    pub key_id: String,
    /// The signature.
    pub signature: Vec<u8>,
}

/// The chain's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The last chained entry.
    pub pos: i64,
    /// Its hash.
    pub hash: Hash,
    /// When its fact was written.
    pub at: i64,
}

/// What [`Store::chain_evidence`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chained {
    /// Entries chained now.
    pub chained: usize,
    /// The chain's end after it, if any entry is chained.
    pub head: Option<Head>,
}

/// How many entries the log holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogCounts {
    /// Chained entries.
    pub chained: i64,
    /// Entries written but not chained yet.
    pub unchained: i64,
    /// Seals.
    pub seals: i64,
    /// The last seal's position.
    pub sealed_to: Option<i64>,
}

/// A fact about to be written: its kind and body.
pub(crate) struct Fact {
    pub kind: &'static str,
    pub body: String,
}

#[derive(Serialize)]
struct Rows<T> {
    fields: &'static [&'static str],
    rows: Vec<T>,
}

fn rows<T: Serialize>(fields: &'static [&'static str], rows: Vec<T>) -> String {
    serde_json::to_string(&Rows { fields, rows }).unwrap_or_default()
}

/// Rows grouped by a name (a source, a target), in first-seen order.
#[derive(Serialize)]
struct Group<'a, T> {
    #[serde(skip)]
    key: &'a str,
    #[serde(flatten)]
    name: std::collections::BTreeMap<&'static str, &'a str>,
    rows: Vec<T>,
}

fn grouped<'a, T>(
    by: &'static str,
    items: impl Iterator<Item = (&'a str, T)>,
) -> Vec<Group<'a, T>> {
    let mut out: Vec<Group<'a, T>> = Vec::new();
    for (k, row) in items {
        match out.iter_mut().rev().find(|g| g.key == k) {
            Some(g) => g.rows.push(row),
            None => out.push(Group {
                key: k,
                name: [(by, k)].into_iter().collect(),
                rows: vec![row],
            }),
        }
    }
    out
}

/// What the log keeps of a record: its source id masked, its digest.
pub(crate) struct Receipt {
    source_id: String,
    record_sha256: String,
}

/// The receipts of a batch's records, made before its transaction (off the
/// store's one writer, for SQLite).
pub(crate) fn receipts(batch: &[Ingest]) -> Vec<Receipt> {
    batch
        .iter()
        .map(|i| Receipt {
            source_id: crate::domain::mask::text(&i.source_id),
            record_sha256: sha256_hex(&i.record),
        })
        .collect()
}

/// `received`: the records an ingest stored, by source.
pub(crate) fn received<'a>(
    stored: impl Iterator<Item = (i64, &'a Ingest, &'a Receipt)>,
) -> Option<Fact> {
    #[derive(Serialize)]
    struct Body<'a> {
        fields: &'static [&'static str],
        sources: Vec<Group<'a, (i64, &'a str, &'a str)>>,
    }
    let sources = grouped(
        "source",
        stored.map(|(id, i, r)| {
            (
                i.source.as_str(),
                (id, r.source_id.as_str(), r.record_sha256.as_str()),
            )
        }),
    );
    (!sources.is_empty()).then(|| Fact {
        kind: "received",
        body: serde_json::to_string(&Body {
            fields: &["inbox_id", "source_id", "record_sha256"],
            sources,
        })
        .unwrap_or_default(),
    })
}

/// What the log keeps of a delivery: made before the settle's transaction.
pub(crate) struct DeliveryReceipt {
    response_sha256: Option<String>,
}

/// The receipts of a settle's deliveries (`None` for other outcomes).
pub(crate) fn delivery_receipts(settles: &[Settle]) -> Vec<Option<DeliveryReceipt>> {
    settles
        .iter()
        .map(|s| {
            matches!(s.outcome, Outcome::Delivered).then(|| DeliveryReceipt {
                response_sha256: Some(s.attempt.response_sha256.clone().unwrap_or_else(|| {
                    sha256_hex(s.attempt.excerpt.as_deref().unwrap_or("").as_bytes())
                })),
            })
        })
        .collect()
}

/// `delivered`: the deliveries a settle applied, by target, each with the
/// digest of the target's answer (the answer's body; where there is none,
/// the receipt the sink kept, such as a broker's partition and offset).
/// Digests are listed once (`responses`) and named by their place: the
/// messages of one batch request share one answer.
pub(crate) fn delivered<'a>(
    applied: impl Iterator<Item = (&'a Settle, &'a DeliveryReceipt)>,
) -> Option<Fact> {
    #[derive(Serialize)]
    struct Body<'a> {
        fields: &'static [&'static str],
        responses: Vec<&'a str>,
        targets: Vec<Group<'a, (i64, Option<i64>, usize)>>,
    }
    let mut responses: Vec<&str> = Vec::new();
    let mut place: std::collections::HashMap<&str, usize> = Default::default();
    let mut rows = Vec::new();
    for (s, r) in applied {
        let d = r.response_sha256.as_deref().unwrap_or("");
        let i = *place.entry(d).or_insert_with(|| {
            responses.push(d);
            responses.len() - 1
        });
        rows.push((s.target.as_str(), (s.id, s.attempt.status_code, i)));
    }
    let targets = grouped("target", rows.into_iter());
    (!targets.is_empty()).then(|| Fact {
        kind: "delivered",
        body: serde_json::to_string(&Body {
            fields: &["message_id", "status", "response"],
            responses,
            targets,
        })
        .unwrap_or_default(),
    })
}

/// `payment_file`: a batch's file recorded as sent.
pub(crate) fn payment_file(batch_id: &str, sha256: &str) -> Fact {
    Fact {
        kind: "payment_file",
        body: serde_json::json!({ "batch_id": batch_id, "file_sha256": sha256 }).to_string(),
    }
}

/// `bank_results`: the bank's answers for payments.
pub(crate) fn bank_results(results: &[BankResult]) -> Option<Fact> {
    let rows_: Vec<(&str, &str, Option<&str>)> = results
        .iter()
        .map(|r| {
            (
                r.payment_id.as_str(),
                r.result.as_str(),
                r.reason_code.as_deref(),
            )
        })
        .collect();
    (!rows_.is_empty()).then(|| Fact {
        kind: "bank_results",
        body: rows(&["payment_id", "result", "reason_code"], rows_),
    })
}

/// `operator`: an operator's action, as the audit keeps it.
pub(crate) fn operator(actor: &str, action: &str, subject: &str, reason: &str) -> Fact {
    Fact {
        kind: "operator",
        body: serde_json::json!({
            "actor": actor,
            "action": action,
            "subject": crate::domain::mask::text(subject),
            "reason": crate::domain::mask::text(reason),
        })
        .to_string(),
    }
}

/// The key that signs seals: Ed25519, or SM2 (GB/T 32918, with the
/// default distinguishing id `1234567812345678`).
pub enum SealKey {
    /// Ed25519.
    Ed25519(Box<ed25519_dalek::SigningKey>),
    /// SM2 with SM3.
    Sm2(Box<sm2::dsa::SigningKey>),
}

/// The public half of a [`SealKey`], to check seals with.
#[derive(Clone)]
pub enum VerifyKey {
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// SM2 with SM3.
    Sm2(Box<sm2::dsa::VerifyingKey>),
}

/// The SM2 distinguishing id (GB/T 35276's default).
const SM2_ID: &str = "1234567812345678";

/// Why a key cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "SealKey({} {})", self.algorithm(), self.public().id())
    }
}

impl SealKey {
    /// A key from PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, as
    /// `openssl genpkey -algorithm ed25519` or `tongban log keygen` writes).
    pub fn from_pem(pem: &str) -> Result<SealKey, KeyError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SealKey::Ed25519(Box::new(k)));
        }
        if let Ok(k) = sm2::SecretKey::from_pkcs8_pem(pem) {
            let k = sm2::dsa::SigningKey::new(SM2_ID, &k)
                .map_err(|e| KeyError(format!("not a usable SM2 key: {e}")))?;
            return Ok(SealKey::Sm2(Box::new(k)));
        }
        Err(KeyError(
            "not an Ed25519 or SM2 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----)".into(),
        ))
    }

    /// A new key from the operating system's randomness.
    pub fn generate(algorithm: &str) -> Result<SealKey, KeyError> {
        let mut seed = [0u8; 32];
        loop {
            getrandom::getrandom(&mut seed)
                .map_err(|e| KeyError(format!("no randomness from the operating system: {e}")))?;
            match algorithm {
                "ed25519" => {
                    return Ok(SealKey::Ed25519(Box::new(
                        ed25519_dalek::SigningKey::from_bytes(&seed),
                    )))
                }
                "sm2" => {
                    // A seed outside [1, n-1] is drawn again.
                    if let Ok(k) = sm2::SecretKey::from_slice(&seed) {
                        let k = sm2::dsa::SigningKey::new(SM2_ID, &k)
                            .map_err(|e| KeyError(e.to_string()))?;
                        return Ok(SealKey::Sm2(Box::new(k)));
                    }
                }
                other => {
                    return Err(KeyError(format!(
                        "unknown algorithm {other:?} (ed25519 or sm2)"
                    )))
                }
            }
        }
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let pem = match self {
            SealKey::Ed25519(k) => k.to_pkcs8_pem(Default::default()),
            SealKey::Sm2(k) => {
                let secret = sm2::SecretKey::from_bytes(&k.to_bytes())
                    .map_err(|e| KeyError(e.to_string()))?;
                secret.to_pkcs8_pem(Default::default())
            }
        };
        pem.map(|p| p.to_string())
            .map_err(|e| KeyError(e.to_string()))
    }

    /// `ed25519` or `sm2`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            SealKey::Ed25519(_) => "ed25519",
            SealKey::Sm2(_) => "sm2",
        }
    }

    /// The public half.
    pub fn public(&self) -> VerifyKey {
        match self {
            SealKey::Ed25519(k) => VerifyKey::Ed25519(k.verifying_key()),
            SealKey::Sm2(k) => VerifyKey::Sm2(Box::new(k.verifying_key().clone())),
        }
    }

    /// Signs the chain's end.
    pub fn seal(&self, head: Head, at: i64) -> Seal {
        use ed25519_dalek::Signer;
        let m = seal_message(head.pos, at, &head.hash);
        let signature = match self {
            SealKey::Ed25519(k) => k.sign(&m).to_bytes().to_vec(),
            SealKey::Sm2(k) => {
                let s: sm2::dsa::Signature = k.sign(&m);
                s.to_bytes().to_vec()
            }
        };
        Seal {
            pos: head.pos,
            at,
            hash: head.hash,
            algorithm: self.algorithm().into(),
            key_id: self.public().id(),
            signature,
        }
    }
}

impl VerifyKey {
    /// A public key from SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str) -> Result<VerifyKey, KeyError> {
        use ed25519_dalek::pkcs8::DecodePublicKey;
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(VerifyKey::Ed25519(k));
        }
        if let Ok(k) = sm2::PublicKey::from_public_key_pem(pem) {
            let k = sm2::dsa::VerifyingKey::new(SM2_ID, k)
                .map_err(|e| KeyError(format!("not a usable SM2 key: {e}")))?;
            return Ok(VerifyKey::Sm2(Box::new(k)));
        }
        Err(KeyError(
            "not an Ed25519 or SM2 public key in PEM (-----BEGIN PUBLIC KEY-----)".into(),
        ))
    }

    /// The key as SPKI PEM.
    pub fn to_pem(&self) -> String {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        match self {
            VerifyKey::Ed25519(k) => k.to_public_key_pem(Default::default()),
            VerifyKey::Sm2(k) => sm2::PublicKey::from_affine(*k.as_affine())
                .map_err(|_| ed25519_dalek::pkcs8::spki::Error::KeyMalformed)
                .and_then(|p| p.to_public_key_pem(Default::default())),
        }
        .unwrap_or_default()
    }

    /// `ed25519` or `sm2`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            VerifyKey::Ed25519(_) => "ed25519",
            VerifyKey::Sm2(_) => "sm2",
        }
    }

    /// The key's id: `ed25519:` or `sm2:` and the first 16 hex digits of
    /// the SHA-256 of its PEM.
    pub fn id(&self) -> String {
        format!(
            "{}:{}",
            self.algorithm(),
            &sha256_hex(self.to_pem().as_bytes())[..16]
        )
    }

    /// Whether `seal` is this key's signature over its position and hash.
    pub fn verifies(&self, seal: &Seal) -> bool {
        use ed25519_dalek::Verifier;
        let m = seal_message(seal.pos, seal.at, &seal.hash);
        match self {
            VerifyKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(&seal.signature)
                .is_ok_and(|s| k.verify(&m, &s).is_ok()),
            VerifyKey::Sm2(k) => sm2::dsa::Signature::from_slice(&seal.signature)
                .is_ok_and(|s| k.verify(&m, &s).is_ok()),
        }
    }
}

/// Where a chain is not intact.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("entry {pos}: {why}")]
pub struct Broken {
    /// The first entry (or seal's entry) that does not hold.
    pub pos: i64,
    /// Why, in words.
    pub why: String,
}

/// What a verified range holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// First and last entries checked.
    pub first: Option<i64>,
    /// The last entry checked.
    pub last: Option<i64>,
    /// Entries checked.
    pub entries: i64,
    /// Seals whose signature was checked with the trusted key.
    pub seals_checked: i64,
    /// Seals not checked (no key given, or another key's).
    pub seals_unchecked: i64,
    /// The last entry a checked seal vouches for.
    pub sealed_to: Option<i64>,
}

/// A range checked: what held, and the first thing that did not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// What was verified (up to the break, if any).
    pub verified: Verified,
    /// The first entry or seal that does not hold.
    pub broken: Option<Broken>,
}

/// Checks entries in chain order and the seals among them: each entry's
/// hash is made again from its content and the hash before it; each seal
/// must name an entry's hash as the chain has it and carry a signature a
/// trusted key made. After the first break, nothing more is checked.
pub struct Verifier {
    keys: Vec<VerifyKey>,
    last: Option<(i64, Hash)>,
    pending_seals: Vec<Seal>,
    out: Verified,
    broken: Option<Broken>,
}

impl Verifier {
    /// A verifier that trusts seals signed by these keys (none: seals are
    /// counted, not checked; a seal by any other key breaks the range).
    pub fn new(keys: Vec<VerifyKey>) -> Verifier {
        Verifier {
            keys,
            last: None,
            pending_seals: Vec::new(),
            out: Verified::default(),
            broken: None,
        }
    }

    /// Whether everything given so far holds.
    pub fn intact(&self) -> bool {
        self.broken.is_none()
    }

    /// The next entry.
    pub fn entry(&mut self, e: &Entry) -> Result<(), Broken> {
        if let Some(b) = &self.broken {
            return Err(b.clone());
        }
        let r = self.check_entry(e);
        self.keep(r)
    }

    /// A seal; one for an entry not seen yet is checked when it comes.
    pub fn seal(&mut self, s: &Seal) -> Result<(), Broken> {
        if let Some(b) = &self.broken {
            return Err(b.clone());
        }
        let r = self.check_seal(s);
        self.keep(r)
    }

    fn keep(&mut self, r: Result<(), Broken>) -> Result<(), Broken> {
        if let Err(b) = &r {
            self.broken = Some(b.clone());
        }
        r
    }

    fn check_entry(&mut self, e: &Entry) -> Result<(), Broken> {
        let broken = |why: String| Broken { pos: e.pos, why };
        match self.last {
            None if e.pos == 1 && e.prev != GENESIS => {
                return Err(broken(
                    "the first entry's previous hash is not zero: entries before it were removed"
                        .into(),
                ))
            }
            None => {}
            Some((pos, _)) if e.pos != pos + 1 => {
                return Err(broken(format!(
                    "follows entry {pos}: entries {} to {} are missing",
                    pos + 1,
                    e.pos - 1
                )))
            }
            Some((_, hash)) if e.prev != hash => {
                return Err(broken(format!(
                    "its previous hash {} is not the hash of entry {} ({}): an entry was removed, inserted or rewritten before it",
                    short(&e.prev),
                    e.pos - 1,
                    short(&hash)
                )))
            }
            Some(_) => {}
        }
        let made = entry_hash(&e.prev, e.pos, e.at, &e.kind, &e.body);
        if made != e.hash {
            return Err(broken(format!(
                "its content does not match its hash (kept {}, made {}): the entry was changed after it was chained",
                short(&e.hash),
                short(&made)
            )));
        }
        self.last = Some((e.pos, e.hash));
        self.out.first.get_or_insert(e.pos);
        self.out.last = Some(e.pos);
        self.out.entries += 1;
        // Seals given before their entry, now that it has come.
        let (now, later): (Vec<Seal>, Vec<Seal>) = std::mem::take(&mut self.pending_seals)
            .into_iter()
            .partition(|s| s.pos <= e.pos);
        self.pending_seals = later;
        for s in now {
            self.check_seal(&s)?;
        }
        Ok(())
    }

    /// Checks a seal against the entry it seals, which must be the last one
    /// given (a seal follows its entry, in an export and from the store):
    /// only the last hash is kept, so a range of any length is verified in
    /// constant memory.
    fn check_seal(&mut self, s: &Seal) -> Result<(), Broken> {
        let broken = |why: String| Broken { pos: s.pos, why };
        let hash = match self.last {
            Some((p, h)) if p == s.pos => h,
            Some((p, _)) if s.pos < p => {
                return Err(broken(format!(
                    "its seal comes after entry {p}: a seal must follow the entry it seals"
                )))
            }
            _ => {
                self.pending_seals.push(s.clone());
                return Ok(());
            }
        };
        if hash != s.hash {
            return Err(broken(format!(
                "the seal of {} signed hash {}, but the chain has {}: the entries up to it were rewritten",
                when(s.at),
                short(&s.hash),
                short(&hash)
            )));
        }
        if self.keys.is_empty() {
            self.out.seals_unchecked += 1;
            return Ok(());
        }
        let Some(k) = self.keys.iter().find(|k| k.id() == s.key_id) else {
            return Err(broken(format!(
                "the seal of {} is signed by key {}, which is not a trusted key",
                when(s.at),
                s.key_id
            )));
        };
        if !k.verifies(s) {
            return Err(broken(format!(
                "the seal's signature does not verify with key {}: the seal was forged or changed",
                k.id()
            )));
        }
        self.out.seals_checked += 1;
        self.out.sealed_to = self.out.sealed_to.max(Some(s.pos));
        Ok(())
    }

    /// The outcome, once every entry and seal was given.
    pub fn finish(mut self) -> Checked {
        // Seals past the last entry vouch for nothing in the range.
        self.out.seals_unchecked += self.pending_seals.len() as i64;
        Checked {
            verified: self.out,
            broken: self.broken,
        }
    }
}

fn short(h: &Hash) -> String {
    hex(&h[..6])
}

/// A time for people, UTC.
pub fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Store {
    /// Chains up to `limit` unchained entries, in the order they were
    /// written. On PostgreSQL one hub chains at a time (an advisory lock);
    /// another finds it busy and chains nothing.
    pub async fn chain_evidence(&self, limit: usize) -> Result<Chained, StoreError> {
        both!(self, s => s.chain_evidence(limit).await)
    }

    /// Keeps a seal (a seal of the same entry already kept stays).
    pub async fn add_seal(&self, seal: Seal) -> Result<(), StoreError> {
        both!(self, s => s.add_seal(seal).await)
    }

    /// The last seal.
    pub async fn last_seal(&self) -> Result<Option<Seal>, StoreError> {
        both!(self, s => s.last_seal().await)
    }

    /// Chained entries from `from` to `to`, at most `limit`, in order.
    pub async fn evidence(
        &self,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        both!(self, s => s.evidence(from, to, limit).await)
    }

    /// Seals of entries from `from` to `to`, in order.
    pub async fn seals(&self, from: i64, to: i64) -> Result<Vec<Seal>, StoreError> {
        both!(self, s => s.seals(from, to).await)
    }

    /// The first seal of an entry at or after `pos`.
    pub async fn seal_after(&self, pos: i64) -> Result<Option<Seal>, StoreError> {
        both!(self, s => s.seal_after(pos).await)
    }

    /// The first chained entry written at or after `ms`, or (`last`) the
    /// last written at or before it.
    pub async fn evidence_position_at(
        &self,
        ms: i64,
        last: bool,
    ) -> Result<Option<i64>, StoreError> {
        both!(self, s => s.evidence_position_at(ms, last).await)
    }

    /// Verifies the chained entries from `from` to `to` and the seals among
    /// them, trusting seals signed by `keys`. The first seal after `to` is
    /// checked too (with the entries up to it), since it vouches for the
    /// range's last entries.
    pub async fn verify_log(
        &self,
        keys: Vec<VerifyKey>,
        from: i64,
        to: i64,
    ) -> Result<Checked, StoreError> {
        const PAGE: usize = 10_000;
        let mut v = Verifier::new(keys);
        // The range, then up to the first seal past it.
        let beyond = self.seal_after(to + 1).await?;
        let end = beyond.as_ref().map_or(to, |s| s.pos);
        let mut at = from;
        while at <= end && v.intact() {
            let page = self.evidence(at, end, PAGE).await?;
            let Some(last) = page.last().map(|e| e.pos) else {
                break;
            };
            let seals = self.seals(at, last.min(to)).await?;
            let mut s = seals.iter().peekable();
            for e in &page {
                let _ = v.entry(e);
                while let Some(seal) = s.next_if(|x| x.pos <= e.pos) {
                    let _ = v.seal(seal);
                }
            }
            at = last + 1;
        }
        if let Some(s) = &beyond {
            let _ = v.seal(s);
        }
        Ok(v.finish())
    }

    /// How many entries and seals the log holds.
    pub async fn log_counts(&self) -> Result<LogCounts, StoreError> {
        both!(self, s => s.log_counts().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Entry> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|pos| {
                let body = format!("{{\"n\":{pos}}}");
                let hash = entry_hash(&prev, pos, 1_000 + pos, "operator", &body);
                let e = Entry {
                    pos,
                    at: 1_000 + pos,
                    kind: "operator".into(),
                    body,
                    prev,
                    hash,
                };
                prev = hash;
                e
            })
            .collect()
    }

    fn head(e: &Entry) -> Head {
        Head {
            pos: e.pos,
            hash: e.hash,
            at: e.at,
        }
    }

    #[test]
    fn an_intact_chain_verifies_and_each_kind_of_change_is_named() {
        for alg in ["ed25519", "sm2"] {
            let key = SealKey::generate(alg).unwrap();
            let again = SealKey::from_pem(&key.to_pem().unwrap()).unwrap();
            assert_eq!(again.public().id(), key.public().id(), "{alg}");
            let public = VerifyKey::from_pem(&key.public().to_pem()).unwrap();
            let entries = chain(10);
            let seal = key.seal(head(&entries[7]), 5_000);
            let check = |entries: &[Entry], seal: &Seal| {
                let mut v = Verifier::new(vec![public.clone()]);
                for e in entries {
                    let _ = v.entry(e);
                    if e.pos == seal.pos {
                        let _ = v.seal(seal);
                    }
                }
                let c = v.finish();
                match c.broken {
                    Some(b) => Err(b),
                    None => Ok(c.verified),
                }
            };
            let ok = check(&entries, &seal).unwrap();
            assert_eq!(
                (ok.entries, ok.seals_checked, ok.sealed_to),
                (10, 1, Some(8))
            );

            // A body changed in place.
            let mut t = entries.clone();
            t[4].body = "{\"n\":500}".into();
            let e = check(&t, &seal).unwrap_err();
            assert_eq!(e.pos, 5, "{e}");
            assert!(e.why.contains("does not match its hash"), "{e}");

            // The chain rewritten from entry 5 on: every hash recomputed.
            let mut t = entries.clone();
            t[4].body = "{\"n\":500}".into();
            for i in 4..t.len() {
                t[i].prev = if i == 0 { GENESIS } else { t[i - 1].hash };
                t[i].hash = entry_hash(&t[i].prev, t[i].pos, t[i].at, &t[i].kind, &t[i].body);
            }
            let e = check(&t, &seal).unwrap_err();
            assert_eq!(e.pos, 8, "{e}");
            assert!(e.why.contains("were rewritten"), "{e}");

            // An entry removed.
            let mut t = entries.clone();
            t.remove(2);
            let e = check(&t, &seal).unwrap_err();
            assert!(e.why.contains("entries 3 to 3 are missing"), "{e}");

            // A forged seal over the rewritten chain.
            let mut forged = seal.clone();
            forged.signature[3] ^= 1;
            let e = check(&entries, &forged).unwrap_err();
            assert!(e.why.contains("does not verify"), "{e}");

            // Another key's seal is not trusted.
            let other = SealKey::generate(alg).unwrap();
            let mut v = Verifier::new(vec![other.public()]);
            for e in &entries[..8] {
                v.entry(e).unwrap();
            }
            let e = v.seal(&seal).unwrap_err();
            assert!(e.why.contains("not a trusted key"), "{e}");

            // A seal out of its place (after later entries) is named.
            let mut v = Verifier::new(vec![public.clone()]);
            for e in &entries {
                v.entry(e).unwrap();
            }
            let e = v.seal(&seal).unwrap_err();
            assert!(e.why.contains("must follow the entry it seals"), "{e}");
        }
    }

    #[test]
    fn hex_round_trips_and_a_key_never_shows_in_debug() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])).unwrap(),
            [0, 1, 0xab, 0xff]
        );
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
        let k = SealKey::generate("ed25519").unwrap();
        let pem = k.to_pem().unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&body[..20]), "{dbg}");
        assert!(dbg.starts_with("SealKey(ed25519 ed25519:"), "{dbg}");
    }
}
