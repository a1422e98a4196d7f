//! What a simulator keeps of what it did and what it offers: the
//! [`Ledger`] of its effects and the [`Feed`]s of documents it serves by
//! position. Both only grow, and a demo of 100,000 people puts about a
//! million effects and a few hundred thousand documents into them, so both
//! keep their contents in zstd-compressed blocks: the current block is kept
//! as it is, and sealed (compressed) once full.

use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// zstd's level for sealed blocks: its default, which compresses blocks of
/// this size at a few hundred MB/s.
const LEVEL: i32 = 3;

/// A block, compressed, with its size before compression first (4 bytes,
/// little-endian).
fn seal(raw: &[u8]) -> Box<[u8]> {
    let size = u32::try_from(raw.len()).expect("a block under 4 GiB");
    let mut out = Vec::with_capacity(raw.len() / 3 + 16);
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&zstd::bulk::compress(raw, LEVEL).expect("zstd compresses into memory"));
    out.into_boxed_slice()
}

/// A block [`seal`]ed, as it was.
fn unseal(block: &[u8]) -> Vec<u8> {
    let size = u32::from_le_bytes(block[..4].try_into().expect("4 bytes")) as usize;
    zstd::bulk::decompress(&block[4..], size).expect("a block this process sealed")
}

/// One effect a simulator applied, copied out of its [`Ledger`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Effect {
    /// What was done (`card_loaded`, `eligibility`, `status`, …).
    pub kind: &'static str,
    subject: String,
    detail: String,
    /// When, ms since the epoch.
    pub at: i64,
}

impl Effect {
    /// An effect of `kind` for `subject`.
    pub fn new(kind: &'static str, subject: &str, detail: &str, at: i64) -> Effect {
        Effect {
            kind,
            subject: subject.to_string(),
            detail: detail.to_string(),
            at,
        }
    }

    /// Who it was for (ID number) or what it is about (application id).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// A short description.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

/// An effect as a [`Ledger`] reads it back, borrowed (`/_ledger` writes it
/// as [`Effect`] is written).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EffectRef<'a> {
    /// What was done.
    pub kind: &'static str,
    subject: &'a str,
    detail: &'a str,
    /// When, ms since the epoch.
    pub at: i64,
}

impl<'a> EffectRef<'a> {
    /// Who it was for (ID number) or what it is about (application id).
    pub fn subject(&self) -> &'a str {
        self.subject
    }

    /// A short description.
    pub fn detail(&self) -> &'a str {
        self.detail
    }

    /// An owned copy.
    pub fn to_owned(&self) -> Effect {
        Effect::new(self.kind, self.subject, self.detail, self.at)
    }
}

/// The ledger: effects in order, and how many requests repeated one.
///
/// Effects are written one after the other in a compact encoding (the
/// kind's index, the time as the difference from the effect before, the
/// subject and the detail, each after its length) into a block; a full
/// block is compressed. In a demo of 100,000 people, 650,000 effects take
/// 5.2 MB, 8 bytes an effect (the demo prints it).
#[derive(Default)]
pub struct Ledger {
    /// Full blocks, compressed.
    sealed: Vec<Box<[u8]>>,
    /// The effects after the sealed blocks, encoded.
    open: Vec<u8>,
    /// The time of the last effect in `open` (0 when it is empty).
    open_at: i64,
    /// Effects in all.
    len: usize,
    /// The kinds seen, by their index in the encoding.
    kinds: Vec<&'static str>,
    /// Idempotency keys applied, as 64-bit hashes (a ledger of millions of
    /// keys stays small; a collision would need 2^32 keys).
    keys: HashSet<u64>,
    /// Effects per kind.
    counts: HashMap<&'static str, u64>,
    /// Requests that carried an idempotency key already applied.
    pub repeats: u64,
}

impl Ledger {
    /// Encoded bytes per block before it is sealed.
    pub const BLOCK: usize = 64 * 1024;

    /// Records an effect once per idempotency key (deduplicated, so a
    /// delivery retried by the hub counts once); false if it was a repeat.
    pub fn apply(
        &mut self,
        idem_key: &str,
        kind: &'static str,
        subject: &str,
        detail: &str,
        at: i64,
    ) -> bool {
        if !idem_key.is_empty() && !self.keys.insert(key_hash(idem_key)) {
            self.repeats += 1;
            return false;
        }
        *self.counts.entry(kind).or_default() += 1;
        let k = match self.kinds.iter().position(|k| *k == kind) {
            Some(k) => k,
            None => {
                self.kinds.push(kind);
                self.kinds.len() - 1
            }
        };
        let open = &mut self.open;
        open.push(u8::try_from(k).expect("fewer than 256 kinds of effect"));
        put_varint(open, zigzag(at.wrapping_sub(self.open_at)));
        for text in [subject, detail] {
            put_varint(open, text.len() as u64);
            open.extend_from_slice(text.as_bytes());
        }
        self.open_at = at;
        self.len += 1;
        if self.open.len() >= Self::BLOCK {
            self.sealed.push(seal(&self.open));
            self.open.clear();
            self.open_at = 0;
        }
        true
    }

    /// How many effects of a kind.
    pub fn count(&self, kind: &str) -> u64 {
        self.counts.get(kind).copied().unwrap_or(0)
    }

    /// How many effects in all.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `f` with every effect, in order (each sealed block is
    /// decompressed in turn; nothing else is copied).
    pub fn for_each(&self, mut f: impl FnMut(EffectRef<'_>)) {
        for block in &self.sealed {
            self.decode(&unseal(block), &mut f);
        }
        self.decode(&self.open, &mut f);
    }

    /// Every effect, in order (copies).
    pub fn effects(&self) -> Vec<Effect> {
        let mut out = Vec::with_capacity(self.len);
        self.for_each(|e| out.push(e.to_owned()));
        out
    }

    /// The bytes of the compressed blocks and of the open one.
    pub fn footprint(&self) -> usize {
        self.sealed.iter().map(|b| b.len()).sum::<usize>() + self.open.capacity()
    }

    fn decode(&self, mut raw: &[u8], f: &mut impl FnMut(EffectRef<'_>)) {
        let mut at = 0i64;
        while let Some((&k, rest)) = raw.split_first() {
            raw = rest;
            at = at.wrapping_add(unzigzag(take_varint(&mut raw)));
            let mut text = || {
                let n = take_varint(&mut raw) as usize;
                let (t, rest) = raw.split_at(n);
                raw = rest;
                std::str::from_utf8(t).expect("text this ledger wrote from a str")
            };
            let subject = text();
            let detail = text();
            f(EffectRef {
                kind: self.kinds[k as usize],
                subject,
                detail,
                at,
            });
        }
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// LEB128: seven bits a byte, low first.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(raw: &mut &[u8]) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let (&b, rest) = raw.split_first().expect("a varint this ledger wrote");
        *raw = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// A 64-bit hash of an idempotency key (FNV-1a then a final mix).
fn key_hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h.wrapping_mul(0xff51_afd7_ed55_8ccd)
}

/// An append-only feed of documents (JSON or XML), read by position in
/// pages: a simulator's event feed, filed forms, results. Every
/// [`Feed::BLOCK`] documents are sealed into one zstd-compressed block, so
/// that a feed of 100,000 documents of about 800 bytes takes a few MB rather
/// than 80; the documents after the last full block are kept as they are.
#[derive(Default)]
pub struct Feed {
    /// Full blocks: each document as a 4-byte little-endian length and its
    /// bytes, compressed.
    sealed: Vec<Box<[u8]>>,
    /// The documents after the sealed blocks.
    tail: Vec<Box<[u8]>>,
}

impl Feed {
    /// Documents per sealed block.
    pub const BLOCK: usize = 256;

    /// Appends a document; returns the feed's length.
    pub fn push(&mut self, doc: &[u8]) -> usize {
        self.tail.push(doc.into());
        if self.tail.len() == Self::BLOCK {
            let size = self.tail.iter().map(|d| d.len() + 4).sum();
            let mut raw = Vec::with_capacity(size);
            for d in self.tail.drain(..) {
                raw.extend_from_slice(&(d.len() as u32).to_le_bytes());
                raw.extend_from_slice(&d);
            }
            self.sealed.push(seal(&raw));
        }
        self.len()
    }

    /// Documents in the feed.
    pub fn len(&self) -> usize {
        self.sealed.len() * Self::BLOCK + self.tail.len()
    }

    /// Whether the feed is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A page from position `from`, as [`super::json_page`] writes it.
    pub fn page(&self, from: usize, page: usize, format: (&str, &str, bool)) -> Vec<u8> {
        self.read(from, page, |docs, next_at| {
            super::page_body(docs.iter().copied(), next_at, format)
        })
    }

    /// Calls `f` with the documents from position `from`, at most `page` of
    /// them, and the position after them.
    pub fn read<R>(&self, from: usize, page: usize, f: impl FnOnce(&[&[u8]], usize) -> R) -> R {
        let to = (from + page).min(self.len());
        let next_at = to.max(from);
        let from = from.min(to);
        // The sealed blocks the page touches, decompressed and split.
        let sealed_to = to.min(self.sealed.len() * Self::BLOCK);
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        if from < sealed_to {
            for b in from / Self::BLOCK..=(sealed_to - 1) / Self::BLOCK {
                blocks.push(unseal(&self.sealed[b]));
            }
        }
        let mut docs: Vec<&[u8]> = Vec::with_capacity(to - from);
        let first = from / Self::BLOCK;
        for (i, raw) in blocks.iter().enumerate() {
            let base = (first + i) * Self::BLOCK;
            let mut at = 0;
            for n in base..base + Self::BLOCK {
                let len = u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes")) as usize;
                let doc = &raw[at + 4..at + 4 + len];
                at += 4 + len;
                if (from..to).contains(&n) {
                    docs.push(doc);
                }
            }
        }
        let tail_from = from.max(self.sealed.len() * Self::BLOCK);
        for n in tail_from..to {
            docs.push(&self.tail[n - self.sealed.len() * Self::BLOCK]);
        }
        f(&docs, next_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(l: &Ledger) -> Vec<(&'static str, String, String, i64)> {
        let mut out = Vec::new();
        l.for_each(|e| out.push((e.kind, e.subject().into(), e.detail().into(), e.at)));
        out
    }

    #[test]
    fn the_ledger_applies_each_idempotency_key_once() {
        let mut l = Ledger::default();
        assert!(l.apply("a", "k", "1", "", 0));
        assert!(!l.apply("a", "k", "1", "", 0));
        assert!(l.apply("b", "k", "2", "", 0));
        assert_eq!(l.effects().len(), 2);
        assert_eq!(
            serde_json::to_value(Effect::new("status", "A-1", "APPROVED", 7)).unwrap(),
            serde_json::json!({"kind": "status", "subject": "A-1", "detail": "APPROVED", "at": 7})
        );
        assert_eq!(l.effects()[1].subject(), "2");
        assert_eq!(l.repeats, 1);
        // Effects of several kinds, with details, read back in order.
        assert!(l.apply("c", "status", "A-1", "APPROVED", 7));
        assert!(l.apply("", "card_loaded", "110105", "", 8));
        let s = |v: &str| v.to_string();
        assert_eq!(
            all(&l),
            [
                ("k", s("1"), s(""), 0),
                ("k", s("2"), s(""), 0),
                ("status", s("A-1"), s("APPROVED"), 7),
                ("card_loaded", s("110105"), s(""), 8)
            ]
        );
        assert_eq!((l.len(), l.count("k"), l.count("status")), (4, 2, 1));
        let mut third = None;
        let mut n = 0;
        l.for_each(|e| {
            n += 1;
            if n == 3 {
                third = Some(serde_json::to_value(e).unwrap());
            }
        });
        assert_eq!(
            third.unwrap(),
            serde_json::json!({"kind": "status", "subject": "A-1", "detail": "APPROVED", "at": 7})
        );
    }

    #[test]
    fn a_ledger_reads_back_every_effect_across_sealed_blocks() {
        let mut l = Ledger::default();
        let mut want = Vec::new();
        let kinds = ["certificate", "card_loaded", "status"];
        for i in 0..40_000i64 {
            let kind = kinds[i as usize % 3];
            let subject = format!("1101051990{:08}", i * 7919 % 100_000_000);
            // Long, short, empty and non-ASCII details; times that go back
            // as well as forward, and far.
            let detail = match i % 4 {
                0 => format!("NEW 110105********{:04} 新办", i % 10_000),
                1 => String::new(),
                2 => "x".repeat((i % 300) as usize),
                _ => "APPROVED".into(),
            };
            let at = match i % 5 {
                0 => i64::MIN + i,
                1 => 1_764_000_000_000 - i,
                _ => 1_764_000_000_000 + i * 3,
            };
            assert!(l.apply(&format!("key-{i}"), kind, &subject, &detail, at));
            want.push((kind, subject, detail, at));
        }
        assert!(
            !l.apply("key-17", "status", "x", "", 0),
            "a key applied once"
        );
        assert!(l.sealed.len() >= 10, "{} blocks sealed", l.sealed.len());
        assert_eq!(l.len(), want.len());
        assert_eq!(all(&l), want);
        let raw: usize = want.iter().map(|w| w.1.len() + w.2.len() + 10).sum();
        assert!(l.footprint() * 2 < raw, "{} bytes for {raw}", l.footprint());
    }

    #[test]
    fn varints_and_zigzag_round_trip() {
        for v in [0, 1, -1, 63, -64, 64, 1 << 40, i64::MAX, i64::MIN] {
            let mut buf = Vec::new();
            put_varint(&mut buf, zigzag(v));
            let mut r = &buf[..];
            assert_eq!(unzigzag(take_varint(&mut r)), v);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn a_feed_pages_across_sealed_blocks_and_its_tail_as_a_list_does() {
        let docs: Vec<Vec<u8>> = (0..Feed::BLOCK * 3 + 17)
            .map(|i| {
                format!(
                    "{{\"n\":{i},\"text\":\"line\\nbreak {}\"}}",
                    "x".repeat(i % 40)
                )
                .into_bytes()
            })
            .collect();
        let mut feed = Feed::default();
        for (i, d) in docs.iter().enumerate() {
            assert_eq!(feed.push(d), i + 1);
        }
        assert_eq!(feed.len(), docs.len());
        assert_eq!(feed.sealed.len(), 3, "three full blocks are compressed");
        let f = ("events", "next", false);
        for (from, page) in [
            (0, 500),
            (250, 10),
            (255, 2),
            (500, 500),
            (700, 100),
            (780, 5),
            (9999, 5),
        ] {
            assert_eq!(
                String::from_utf8(feed.page(from, page, f)).unwrap(),
                String::from_utf8(super::super::json_page(&docs, from, page, f)).unwrap(),
                "page at {from} of {page}"
            );
        }
        let sealed: usize = feed.sealed.iter().map(|b| b.len()).sum();
        let raw: usize = docs[..Feed::BLOCK * 3].iter().map(|d| d.len()).sum();
        assert!(sealed * 3 < raw, "{sealed} bytes compressed for {raw}");
    }
}
