//! ISO 20022 payment files: `pain.001` (customer credit transfer
//! initiation) written as a stream, and `pain.002` (payment status report)
//! written and read as a stream.
//!
//! The writer never holds a file's transactions in memory: the group's and
//! each payment information block's `NbOfTxs` and `CtrlSum` are given up
//! front (the batch builder knows them from the store), and the
//! transactions come from an iterator. The writer checks that what came
//! matches what was declared and fails otherwise, because the XSD cannot
//! check it. The same input gives the same bytes (the creation time is an
//! input), so a batch rebuilt after a crash is byte-identical.
//!
//! Amounts are integer fen; files carry CNY with two decimals. Chinese bank
//! accounts have no IBAN: accounts go in `Othr/Id`, and banks are named by
//! their 12-digit CNAPS code in `ClrSysMmbId/MmbId`.

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use std::io::Write;

/// Which pain.001 version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `pain.001.001.03`: legacy, widely supported.
    V03,
    /// `pain.001.001.09`: current.
    V09,
}

impl Version {
    /// The XML namespace of this version.
    pub fn namespace(self) -> &'static str {
        match self {
            Version::V03 => "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03",
            Version::V09 => "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09",
        }
    }

    /// The message name (`pain.001.001.03`).
    pub fn name(self) -> &'static str {
        match self {
            Version::V03 => "pain.001.001.03",
            Version::V09 => "pain.001.001.09",
        }
    }
}

/// Errors of the payment file formats.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PainError {
    /// Writing failed.
    #[error("writing the payment file: {0}")]
    Io(#[from] std::io::Error),
    /// What came does not match what was declared (count or total).
    #[error("{what}: declared {declared}, written {written}")]
    Mismatch {
        /// `NbOfTxs` or `CtrlSum` of which block.
        what: String,
        /// Declared.
        declared: i64,
        /// Actually written.
        written: i64,
    },
    /// A value does not fit the schema (too long, negative amount…).
    #[error("{0}")]
    Invalid(String),
    /// A document cannot be read. The reason is masked: a parser's message
    /// quotes what it found, which may hold an ID number or a bank card.
    #[error("the {what} cannot be read at byte {at}: {why}")]
    Read {
        /// `status report` (pain.002) or `payment file` (pain.001).
        what: &'static str,
        /// Byte offset.
        at: u64,
        /// What is wrong (masked).
        why: String,
    },
}

/// `GrpHdr`.
#[derive(Clone, Debug)]
pub struct GroupHeader {
    /// `MsgId`, 1–35 characters: the batch id.
    pub msg_id: String,
    /// `CreDtTm`, `YYYY-MM-DDTHH:MM:SS`.
    pub created: String,
    /// Number of transactions in the file.
    pub count: i64,
    /// Sum of the amounts in the file, fen.
    pub total_fen: i64,
    /// `InitgPty/Nm`.
    pub initiator: String,
}

/// One `PmtInf`: the debtor side of a block of transfers.
#[derive(Clone, Debug)]
pub struct PaymentBlock {
    /// `PmtInfId`.
    pub id: String,
    /// `ReqdExctnDt`, `YYYY-MM-DD`.
    pub execution_date: String,
    /// `Dbtr/Nm`.
    pub debtor_name: String,
    /// `DbtrAcct/Id/Othr/Id`.
    pub debtor_account: String,
    /// `DbtrAgt/FinInstnId/ClrSysMmbId/MmbId` (CNAPS code).
    pub debtor_bank: String,
    /// Transactions in the block.
    pub count: i64,
    /// Their sum, fen.
    pub total_fen: i64,
}

/// One `CdtTrfTxInf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// `PmtId/EndToEndId`, 1–35 characters: the payment id.
    pub end_to_end_id: String,
    /// Amount, fen (> 0).
    pub amount_fen: i64,
    /// `Cdtr/Nm`.
    pub creditor_name: String,
    /// `CdtrAcct/Id/Othr/Id`.
    pub creditor_account: String,
    /// `CdtrAgt/FinInstnId/ClrSysMmbId/MmbId` (CNAPS code), if known.
    pub creditor_bank: Option<String>,
    /// `RmtInf/Ustrd`, at most 140 characters.
    pub remittance: String,
}

/// Fen as a decimal amount: `12345` → `123.45`.
pub fn amount(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let f = fen.unsigned_abs();
    format!("{sign}{}.{:02}", f / 100, f % 100)
}

/// A decimal amount as fen: `123.45` → `12345`, `7` → `700`, `0.5` → `50`.
/// More than two decimals (other than zeros) is refused.
pub fn fen(decimal: &str) -> Option<i64> {
    let s = decimal.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 2 {
        return None;
    }
    let cents: i64 = format!("{frac:0<2}").parse().ok()?;
    int.parse::<i64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(cents)
}

fn check_len(what: &str, s: &str, max: usize) -> Result<(), PainError> {
    let n = s.chars().count();
    if n == 0 || n > max {
        return Err(PainError::Invalid(format!(
            "{what} must be 1 to {max} characters, not {n}"
        )));
    }
    Ok(())
}

/// Writes pain.001 files.
pub struct Pain001Writer<W: Write> {
    w: quick_xml::Writer<W>,
    version: Version,
    header: GroupHeader,
    /// The open block: (its declaration, transactions and fen so far).
    block: Option<(PaymentBlock, i64, i64)>,
    /// File totals so far.
    count: i64,
    total: i64,
}

impl<W: Write> Pain001Writer<W> {
    /// Starts a file: the declaration, the document and the group header.
    pub fn start(out: W, version: Version, header: GroupHeader) -> Result<Self, PainError> {
        check_len("MsgId", &header.msg_id, 35)?;
        let mut w = quick_xml::Writer::new(out);
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        w.get_mut().write_all(b"\n")?;
        let mut doc = BytesStart::new("Document");
        doc.push_attribute(("xmlns", version.namespace()));
        w.write_event(Event::Start(doc))?;
        let mut me = Pain001Writer {
            w,
            version,
            header,
            block: None,
            count: 0,
            total: 0,
        };
        me.open("CstmrCdtTrfInitn")?;
        me.open("GrpHdr")?;
        let h = me.header.clone();
        me.leaf("MsgId", &h.msg_id)?;
        me.leaf("CreDtTm", &h.created)?;
        me.leaf("NbOfTxs", &h.count.to_string())?;
        me.leaf("CtrlSum", &amount(h.total_fen))?;
        me.open("InitgPty")?;
        me.leaf("Nm", &h.initiator)?;
        me.close("InitgPty")?;
        me.close("GrpHdr")?;
        Ok(me)
    }

    fn open(&mut self, name: &str) -> Result<(), PainError> {
        self.w.write_event(Event::Start(BytesStart::new(name)))?;
        Ok(())
    }

    fn close(&mut self, name: &str) -> Result<(), PainError> {
        self.w.write_event(Event::End(BytesEnd::new(name)))?;
        Ok(())
    }

    fn leaf(&mut self, name: &str, text: &str) -> Result<(), PainError> {
        self.open(name)?;
        self.w.write_event(Event::Text(BytesText::new(text)))?;
        self.close(name)
    }

    /// `<X><Id><Othr><Id>account</Id></Othr></Id></X>`.
    fn account(&mut self, name: &str, account: &str) -> Result<(), PainError> {
        check_len(name, account, 34)?;
        self.open(name)?;
        self.open("Id")?;
        self.open("Othr")?;
        self.leaf("Id", account)?;
        self.close("Othr")?;
        self.close("Id")?;
        self.close(name)
    }

    /// `<X><FinInstnId><ClrSysMmbId><MmbId>cnaps</MmbId></ClrSysMmbId></FinInstnId></X>`.
    fn agent(&mut self, name: &str, cnaps: &str) -> Result<(), PainError> {
        self.open(name)?;
        self.open("FinInstnId")?;
        self.open("ClrSysMmbId")?;
        self.leaf("MmbId", cnaps)?;
        self.close("ClrSysMmbId")?;
        self.close("FinInstnId")?;
        self.close(name)
    }

    fn end_block(&mut self) -> Result<(), PainError> {
        if let Some((b, n, sum)) = self.block.take() {
            if n != b.count {
                return Err(PainError::Mismatch {
                    what: format!("NbOfTxs of PmtInf {}", b.id),
                    declared: b.count,
                    written: n,
                });
            }
            if sum != b.total_fen {
                return Err(PainError::Mismatch {
                    what: format!("CtrlSum (fen) of PmtInf {}", b.id),
                    declared: b.total_fen,
                    written: sum,
                });
            }
            self.close("PmtInf")?;
        }
        Ok(())
    }

    /// Starts a payment information block (closing the one before).
    pub fn block(&mut self, b: PaymentBlock) -> Result<(), PainError> {
        self.end_block()?;
        check_len("PmtInfId", &b.id, 35)?;
        self.open("PmtInf")?;
        self.leaf("PmtInfId", &b.id)?;
        self.leaf("PmtMtd", "TRF")?;
        self.leaf("NbOfTxs", &b.count.to_string())?;
        self.leaf("CtrlSum", &amount(b.total_fen))?;
        match self.version {
            Version::V03 => self.leaf("ReqdExctnDt", &b.execution_date)?,
            Version::V09 => {
                self.open("ReqdExctnDt")?;
                self.leaf("Dt", &b.execution_date)?;
                self.close("ReqdExctnDt")?;
            }
        }
        self.open("Dbtr")?;
        self.leaf("Nm", &b.debtor_name)?;
        self.close("Dbtr")?;
        self.account("DbtrAcct", &b.debtor_account)?;
        self.agent("DbtrAgt", &b.debtor_bank)?;
        self.block = Some((b, 0, 0));
        Ok(())
    }

    /// Writes one transfer into the open block.
    pub fn transfer(&mut self, t: &Transfer) -> Result<(), PainError> {
        if self.block.is_none() {
            return Err(PainError::Invalid(
                "a transfer outside a PmtInf block".into(),
            ));
        }
        check_len("EndToEndId", &t.end_to_end_id, 35)?;
        check_len("Cdtr/Nm", &t.creditor_name, 140)?;
        if t.amount_fen <= 0 {
            return Err(PainError::Invalid(format!(
                "payment {}: the amount must be positive, not {} fen",
                t.end_to_end_id, t.amount_fen
            )));
        }
        self.open("CdtTrfTxInf")?;
        self.open("PmtId")?;
        self.leaf("EndToEndId", &t.end_to_end_id)?;
        self.close("PmtId")?;
        self.open("Amt")?;
        let mut amt = BytesStart::new("InstdAmt");
        amt.push_attribute(("Ccy", "CNY"));
        self.w.write_event(Event::Start(amt))?;
        self.w
            .write_event(Event::Text(BytesText::new(&amount(t.amount_fen))))?;
        self.close("InstdAmt")?;
        self.close("Amt")?;
        if let Some(bank) = &t.creditor_bank {
            self.agent("CdtrAgt", bank)?;
        }
        self.open("Cdtr")?;
        self.leaf("Nm", &t.creditor_name)?;
        self.close("Cdtr")?;
        self.account("CdtrAcct", &t.creditor_account)?;
        if !t.remittance.is_empty() {
            let r: String = t.remittance.chars().take(140).collect();
            self.open("RmtInf")?;
            self.leaf("Ustrd", &r)?;
            self.close("RmtInf")?;
        }
        self.close("CdtTrfTxInf")?;
        if let Some((_, n, sum)) = &mut self.block {
            *n += 1;
            *sum += t.amount_fen;
        }
        self.count += 1;
        self.total += t.amount_fen;
        Ok(())
    }

    /// Ends the file, checking the group's count and total; returns the output.
    pub fn finish(mut self) -> Result<W, PainError> {
        self.end_block()?;
        if self.count != self.header.count {
            return Err(PainError::Mismatch {
                what: "NbOfTxs of the group".into(),
                declared: self.header.count,
                written: self.count,
            });
        }
        if self.total != self.header.total_fen {
            return Err(PainError::Mismatch {
                what: "CtrlSum (fen) of the group".into(),
                declared: self.header.total_fen,
                written: self.total,
            });
        }
        self.close("CstmrCdtTrfInitn")?;
        self.close("Document")?;
        let mut out = self.w.into_inner();
        out.write_all(b"\n")?;
        Ok(out)
    }
}

/// A transaction's status in a pain.002.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxStatus {
    /// `OrgnlEndToEndId`: the payment id.
    pub end_to_end_id: String,
    /// `TxSts`: `ACCP`, `ACSC`, `ACSP`, `ACTC`, `PDNG`, `RJCT`.
    pub status: String,
    /// `StsRsnInf/Rsn/Cd`: `AC01`, `AC04`, `AM05`, `BE01`, `MD07`…
    pub reason: Option<String>,
}

/// The group part of a pain.002.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusReport {
    /// `GrpHdr/MsgId` of the report.
    pub msg_id: String,
    /// `OrgnlMsgId`: the batch it answers.
    pub original_msg_id: String,
    /// `OrgnlNbOfTxs`.
    pub original_count: Option<i64>,
    /// `OrgnlCtrlSum`, fen.
    pub original_total_fen: Option<i64>,
    /// `GrpSts`: `ACCP`, `ACSC`, `PART`, `RJCT`, `RCVD`, `PDNG`…
    pub group_status: Option<String>,
    /// The group's reason code, if any (a whole file refused: `AM05`, `FF01`).
    pub group_reason: Option<String>,
}

/// Writes a pain.002 (`pain.002.001.03` shape): the group, then each
/// transaction's status. Used by the bank simulator.
pub fn write_pain002<W: Write>(
    out: W,
    report: &StatusReport,
    created: &str,
    txs: impl IntoIterator<Item = TxStatus>,
) -> Result<W, PainError> {
    let mut w = quick_xml::Writer::new(out);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let mut doc = BytesStart::new("Document");
    doc.push_attribute(("xmlns", "urn:iso:std:iso:20022:tech:xsd:pain.002.001.03"));
    w.write_event(Event::Start(doc))?;
    let leaf = |w: &mut quick_xml::Writer<W>, n: &str, t: &str| -> Result<(), PainError> {
        w.write_event(Event::Start(BytesStart::new(n)))?;
        w.write_event(Event::Text(BytesText::new(t)))?;
        w.write_event(Event::End(BytesEnd::new(n)))?;
        Ok(())
    };
    let open = |w: &mut quick_xml::Writer<W>, n: &str| -> Result<(), PainError> {
        w.write_event(Event::Start(BytesStart::new(n)))?;
        Ok(())
    };
    let close = |w: &mut quick_xml::Writer<W>, n: &str| -> Result<(), PainError> {
        w.write_event(Event::End(BytesEnd::new(n)))?;
        Ok(())
    };
    let reason = |w: &mut quick_xml::Writer<W>, code: &str| -> Result<(), PainError> {
        open(w, "StsRsnInf")?;
        open(w, "Rsn")?;
        leaf(w, "Cd", code)?;
        close(w, "Rsn")?;
        close(w, "StsRsnInf")
    };
    open(&mut w, "CstmrPmtStsRpt")?;
    open(&mut w, "GrpHdr")?;
    leaf(&mut w, "MsgId", &report.msg_id)?;
    leaf(&mut w, "CreDtTm", created)?;
    close(&mut w, "GrpHdr")?;
    open(&mut w, "OrgnlGrpInfAndSts")?;
    leaf(&mut w, "OrgnlMsgId", &report.original_msg_id)?;
    leaf(&mut w, "OrgnlMsgNmId", "pain.001.001.03")?;
    if let Some(n) = report.original_count {
        leaf(&mut w, "OrgnlNbOfTxs", &n.to_string())?;
    }
    if let Some(t) = report.original_total_fen {
        leaf(&mut w, "OrgnlCtrlSum", &amount(t))?;
    }
    if let Some(s) = &report.group_status {
        leaf(&mut w, "GrpSts", s)?;
    }
    if let Some(r) = &report.group_reason {
        reason(&mut w, r)?;
    }
    close(&mut w, "OrgnlGrpInfAndSts")?;
    let mut opened = false;
    for tx in txs {
        if !opened {
            open(&mut w, "OrgnlPmtInfAndSts")?;
            leaf(&mut w, "OrgnlPmtInfId", &report.original_msg_id)?;
            opened = true;
        }
        open(&mut w, "TxInfAndSts")?;
        leaf(&mut w, "OrgnlEndToEndId", &tx.end_to_end_id)?;
        leaf(&mut w, "TxSts", &tx.status)?;
        if let Some(r) = &tx.reason {
            reason(&mut w, r)?;
        }
        close(&mut w, "TxInfAndSts")?;
    }
    if opened {
        close(&mut w, "OrgnlPmtInfAndSts")?;
    }
    close(&mut w, "CstmrPmtStsRpt")?;
    close(&mut w, "Document")?;
    Ok(w.into_inner())
}

/// Reads a pain.002 as a stream: `on_tx` is called for each transaction
/// status in order; the group part is returned at the end. Documents with
/// a DTD are refused (no entity is ever expanded).
pub fn read_pain002<R: std::io::BufRead>(
    input: R,
    mut on_tx: impl FnMut(TxStatus),
) -> Result<StatusReport, PainError> {
    let mut r = quick_xml::Reader::from_reader(input);
    let mut buf = Vec::with_capacity(256);
    let mut path: Vec<Vec<u8>> = Vec::with_capacity(8);
    let mut report = StatusReport::default();
    let mut tx: Option<TxStatus> = None;
    let err = |r: &quick_xml::Reader<R>, why: String| PainError::Read {
        what: "status report",
        at: r.buffer_position(),
        why: crate::domain::mask::text(&why),
    };
    loop {
        let ev = r
            .read_event_into(&mut buf)
            .map_err(|e| err(&r, e.to_string()))?;
        match ev {
            Event::DocType(_) => return Err(err(&r, "a DOCTYPE is not accepted".into())),
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_vec();
                if name == b"TxInfAndSts" {
                    tx = Some(TxStatus {
                        end_to_end_id: String::new(),
                        status: String::new(),
                        reason: None,
                    });
                }
                path.push(name);
            }
            // The guard pops the closed element whatever it was.
            Event::End(_) if path.pop().as_deref() == Some(b"TxInfAndSts".as_slice()) => {
                if let Some(t) = tx.take() {
                    if t.end_to_end_id.is_empty() || t.status.is_empty() {
                        return Err(err(
                            &r,
                            "a TxInfAndSts without OrgnlEndToEndId or TxSts".into(),
                        ));
                    }
                    on_tx(t);
                }
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| err(&r, e.to_string()))?;
                let text =
                    quick_xml::escape::unescape(&text).map_err(|e| err(&r, e.to_string()))?;
                let text = text.trim();
                let last = path.last().map(Vec::as_slice).unwrap_or(b"");
                let parent = path
                    .len()
                    .checked_sub(2)
                    .map(|i| path[i].as_slice())
                    .unwrap_or(b"");
                let in_group = path.iter().any(|p| p == b"OrgnlGrpInfAndSts");
                match (&mut tx, last) {
                    (Some(t), b"OrgnlEndToEndId") => t.end_to_end_id = text.to_string(),
                    (Some(t), b"TxSts") => t.status = text.to_string(),
                    (Some(t), b"Cd") if parent == b"Rsn" => t.reason = Some(text.to_string()),
                    (None, b"MsgId") if path.iter().any(|p| p == b"GrpHdr") => {
                        report.msg_id = text.to_string()
                    }
                    (None, b"OrgnlMsgId") => report.original_msg_id = text.to_string(),
                    (None, b"OrgnlNbOfTxs") => {
                        report.original_count = Some(text.parse().map_err(|_| {
                            err(&r, format!("OrgnlNbOfTxs {text:?} is not a number"))
                        })?)
                    }
                    (None, b"OrgnlCtrlSum") => {
                        report.original_total_fen = Some(fen(text).ok_or_else(|| {
                            err(&r, format!("OrgnlCtrlSum {text:?} is not an amount in yuan with at most two decimals"))
                        })?)
                    }
                    (None, b"GrpSts") => report.group_status = Some(text.to_string()),
                    (None, b"Cd") if in_group && parent == b"Rsn" => {
                        report.group_reason = Some(text.to_string())
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !path.is_empty() {
        return Err(err(
            &r,
            "truncated: the document ends inside an element".into(),
        ));
    }
    if report.original_msg_id.is_empty() {
        return Err(err(&r, "no OrgnlGrpInfAndSts/OrgnlMsgId".into()));
    }
    Ok(report)
}

/// A transfer as read from a pain.001.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadTransfer {
    /// `EndToEndId`.
    pub end_to_end_id: String,
    /// `InstdAmt`, fen; `None` if it is not an amount with at most two decimals.
    pub amount_fen: Option<i64>,
    /// `InstdAmt/@Ccy`.
    pub currency: String,
    /// `Cdtr/Nm`.
    pub creditor_name: String,
    /// `CdtrAcct/Id/Othr/Id` (or `IBAN`).
    pub creditor_account: String,
}

/// The group header of a pain.001 as read: what it declares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadHeader {
    /// `MsgId`.
    pub msg_id: String,
    /// `NbOfTxs`, if a number.
    pub count: Option<i64>,
    /// `CtrlSum`, fen, if given and an amount.
    pub total_fen: Option<i64>,
}

/// Reads a pain.001 (either version) as a stream: `on_tx` for each
/// transfer; the group header's declarations are returned. DTDs are refused.
pub fn read_pain001<R: std::io::BufRead>(
    input: R,
    mut on_tx: impl FnMut(ReadTransfer),
) -> Result<ReadHeader, PainError> {
    let mut r = quick_xml::Reader::from_reader(input);
    let mut buf = Vec::with_capacity(256);
    let mut path: Vec<Vec<u8>> = Vec::with_capacity(8);
    let mut header = ReadHeader::default();
    let mut tx: Option<ReadTransfer> = None;
    // The text of the innermost element, collected up to its end tag
    // (text arrives in pieces around entity references).
    let mut text = String::new();
    let err = |r: &quick_xml::Reader<R>, why: String| PainError::Read {
        what: "payment file",
        at: r.buffer_position(),
        why: crate::domain::mask::text(&why),
    };
    loop {
        let ev = r
            .read_event_into(&mut buf)
            .map_err(|e| err(&r, e.to_string()))?;
        match ev {
            Event::DocType(_) => return Err(err(&r, "a DOCTYPE is not accepted".into())),
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_vec();
                if name == b"CdtTrfTxInf" {
                    tx = Some(ReadTransfer::default());
                }
                if name == b"InstdAmt" {
                    if let Some(t) = &mut tx {
                        for a in e.attributes().flatten() {
                            if a.key.local_name().as_ref() == b"Ccy" {
                                t.currency = String::from_utf8_lossy(&a.value).into_owned();
                            }
                        }
                    }
                }
                path.push(name);
                text.clear();
            }
            Event::Text(t) => {
                let piece = t.decode().map_err(|e| err(&r, e.to_string()))?;
                text.push_str(&piece);
            }
            Event::GeneralRef(g) => {
                let c = match &*g {
                    b"amp" => '&',
                    b"lt" => '<',
                    b"gt" => '>',
                    b"apos" => '\'',
                    b"quot" => '"',
                    _ => match g.resolve_char_ref() {
                        Ok(Some(c)) => c,
                        _ => return Err(err(&r, "an unknown entity".into())),
                    },
                };
                text.push(c);
            }
            Event::End(_) => {
                let Some(name) = path.pop() else {
                    return Err(err(&r, "an end tag without a start".into()));
                };
                let value = std::mem::take(&mut text).trim().to_string();
                let has = |n: &[u8]| path.iter().any(|p| p.as_slice() == n);
                match (&mut tx, name.as_slice()) {
                    (Some(_), b"CdtTrfTxInf") => {
                        if let Some(t) = tx.take() {
                            on_tx(t);
                        }
                    }
                    (Some(t), b"EndToEndId") => t.end_to_end_id = value,
                    (Some(t), b"InstdAmt") => t.amount_fen = fen(&value),
                    (Some(t), b"Nm") if has(b"Cdtr") => t.creditor_name = value,
                    (Some(t), b"Id" | b"IBAN") if has(b"CdtrAcct") && !value.is_empty() => {
                        t.creditor_account = value
                    }
                    (None, b"MsgId") if has(b"GrpHdr") => header.msg_id = value,
                    (None, b"NbOfTxs") if has(b"GrpHdr") => header.count = value.parse().ok(),
                    (None, b"CtrlSum") if has(b"GrpHdr") => header.total_fen = fen(&value),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !path.is_empty() {
        return Err(err(
            &r,
            "truncated: the document ends inside an element".into(),
        ));
    }
    if header.msg_id.is_empty() {
        return Err(err(&r, "no GrpHdr/MsgId: not a pain.001".into()));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_read_back() {
        let mut w = Pain001Writer::start(Vec::new(), Version::V09, header(2, 41_100)).unwrap();
        w.block(block(2, 41_100)).unwrap();
        w.transfer(&transfer("LIVING-1", 41_000)).unwrap();
        w.transfer(&transfer("CARE-1", 100)).unwrap();
        let bytes = w.finish().unwrap();
        let mut got = Vec::new();
        let h = read_pain001(bytes.as_slice(), |t| got.push(t)).unwrap();
        assert_eq!(h.msg_id, "B-2026-11-105-001");
        assert_eq!((h.count, h.total_fen), (Some(2), Some(41_100)));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].end_to_end_id, "LIVING-1");
        assert_eq!(got[0].amount_fen, Some(41_000));
        assert_eq!(got[0].currency, "CNY");
        assert_eq!(got[0].creditor_name, "张三 & <李>");
        assert_eq!(got[0].creditor_account, "6217000000000000004");
    }

    #[test]
    fn amounts_are_exact() {
        assert_eq!(amount(12_345), "123.45");
        assert_eq!(amount(5), "0.05");
        assert_eq!(amount(41_000), "410.00");
        assert_eq!(fen("123.45"), Some(12_345));
        assert_eq!(fen("7"), Some(700));
        assert_eq!(fen("0.5"), Some(50));
        assert_eq!(fen("1.230"), Some(123));
        assert_eq!(fen("1.234"), None);
        assert_eq!(fen("-1"), None);
        assert_eq!(fen("1e3"), None);
    }

    fn header(count: i64, total: i64) -> GroupHeader {
        GroupHeader {
            msg_id: "B-2026-11-105-001".into(),
            created: "2026-11-23T10:00:00".into(),
            count,
            total_fen: total,
            initiator: "某省残联 provincial federation".into(),
        }
    }

    fn block(count: i64, total: i64) -> PaymentBlock {
        PaymentBlock {
            id: "B-2026-11-105-001".into(),
            execution_date: "2026-11-25".into(),
            debtor_name: "某省财政 treasury".into(),
            debtor_account: "11001000000000000001".into(),
            debtor_bank: "105100000017".into(),
            count,
            total_fen: total,
        }
    }

    fn transfer(id: &str, fen: i64) -> Transfer {
        Transfer {
            end_to_end_id: id.into(),
            amount_fen: fen,
            creditor_name: "张三 & <李>".into(),
            creditor_account: "6217000000000000004".into(),
            creditor_bank: Some("105100000017".into()),
            remittance: "困难残疾人生活补贴 2026-11".into(),
        }
    }

    #[test]
    fn declared_totals_must_match_what_is_written() {
        let mut w = Pain001Writer::start(Vec::new(), Version::V03, header(2, 500)).unwrap();
        w.block(block(2, 500)).unwrap();
        w.transfer(&transfer("LIVING-1", 200)).unwrap();
        w.transfer(&transfer("LIVING-2", 200)).unwrap();
        let e = w.finish().unwrap_err().to_string();
        assert!(
            e.contains("CtrlSum (fen) of PmtInf") && e.contains("declared 500, written 400"),
            "{e}"
        );
        let w = Pain001Writer::start(Vec::new(), Version::V03, header(1, 100)).unwrap();
        assert!(w
            .finish()
            .unwrap_err()
            .to_string()
            .contains("NbOfTxs of the group"));
    }

    #[test]
    fn text_is_escaped_and_output_is_deterministic() {
        let write = || {
            let mut w = Pain001Writer::start(Vec::new(), Version::V09, header(1, 41_000)).unwrap();
            w.block(block(1, 41_000)).unwrap();
            w.transfer(&transfer("LIVING-110105199003070017-2026-11", 41_000))
                .unwrap();
            String::from_utf8(w.finish().unwrap()).unwrap()
        };
        let a = write();
        assert_eq!(a, write());
        assert!(a.contains("<Nm>张三 &amp; &lt;李&gt;</Nm>"), "{a}");
        assert!(a.contains("<InstdAmt Ccy=\"CNY\">410.00</InstdAmt>"));
        assert!(a.contains("<ReqdExctnDt><Dt>2026-11-25</Dt></ReqdExctnDt>"));
    }

    #[test]
    fn status_reports_round_trip() {
        let report = StatusReport {
            msg_id: "R-1".into(),
            original_msg_id: "B-1".into(),
            original_count: Some(3),
            original_total_fen: Some(123_456),
            group_status: Some("PART".into()),
            group_reason: None,
        };
        let txs = vec![
            TxStatus {
                end_to_end_id: "P-1".into(),
                status: "ACSC".into(),
                reason: None,
            },
            TxStatus {
                end_to_end_id: "P-2".into(),
                status: "RJCT".into(),
                reason: Some("AC04".into()),
            },
            TxStatus {
                end_to_end_id: "P-3".into(),
                status: "RJCT".into(),
                reason: Some("MD07".into()),
            },
        ];
        let xml = write_pain002(Vec::new(), &report, "2026-11-26T09:00:00", txs.clone()).unwrap();
        let mut got = Vec::new();
        let back = read_pain002(xml.as_slice(), |t| got.push(t)).unwrap();
        assert_eq!(back, report);
        assert_eq!(got, txs);
        // A file refused whole: the group reason.
        let refused = StatusReport {
            group_status: Some("RJCT".into()),
            group_reason: Some("AM05".into()),
            ..report
        };
        let xml = write_pain002(Vec::new(), &refused, "2026-11-26T09:00:00", Vec::new()).unwrap();
        let back = read_pain002(xml.as_slice(), |_| panic!("no transactions")).unwrap();
        assert_eq!(back.group_reason.as_deref(), Some("AM05"));
    }

    #[test]
    fn bad_status_reports_are_refused_with_the_place() {
        let e = read_pain002(b"<Document><CstmrPmtStsRpt><GrpHdr>".as_slice(), |_| {}).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = read_pain002(
            b"<!DOCTYPE d [<!ENTITY a \"b\">]><Document/>".as_slice(),
            |_| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("DOCTYPE"), "{e}");
        let e = read_pain002(
            b"<Document><CstmrPmtStsRpt><OrgnlGrpInfAndSts><OrgnlMsgId>B</OrgnlMsgId><OrgnlCtrlSum>1.234</OrgnlCtrlSum></OrgnlGrpInfAndSts></CstmrPmtStsRpt></Document>".as_slice(),
            |_| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("OrgnlCtrlSum"), "{e}");
    }
}
