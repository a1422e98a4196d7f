//! Batch files rendered from the register: pain.001 or the bank's layout,
//! written to any writer a payment at a time, byte-identical every time.

use super::*;

/// A batch as its bank's file, in memory.
pub async fn render(
    p: &PayoutsConfig,
    store: &dyn crate::store::BatchFiles,
    batch: &BatchRow,
    format: &BankFormat,
) -> Result<Vec<u8>, PayoutError> {
    render_to(p, store, batch, format, Vec::new()).await
}

/// A batch as its bank's file, written to `out` as the register is read
/// (a page of payments at a time): a file of any size is rendered in the
/// memory of one page.
pub async fn render_to<W: Write>(
    p: &PayoutsConfig,
    store: &dyn crate::store::BatchFiles,
    batch: &BatchRow,
    format: &BankFormat,
    out: W,
) -> Result<W, PayoutError> {
    let mut file = BatchFile::start(p, batch, format, out).map_err(PayoutError::File)?;
    store
        .each_batch_payment(&batch.batch_id, |pay| {
            file.payment(&pay).map_err(PayoutError::File)
        })
        .await?;
    file.finish().map_err(PayoutError::File)
}

/// A batch's file as it is written, payment by payment: a pain.001
/// document (one payment block from the payer's account, the transfers in
/// the batch's order) or the bank's layout (the header, one detail line per
/// payment, the trailer).
pub struct BatchFile<'a, W: Write> {
    p: &'a PayoutsConfig,
    batch: &'a BatchRow,
    form: Form<'a, W>,
    /// Payments written.
    written: usize,
}

pub(super) enum Form<'a, W: Write> {
    Pain(Box<Pain001Writer<W>>),
    Layout(LayoutFile<'a, W>),
}

/// A file in a bank's layout, as it is written.
pub(super) struct LayoutFile<'a, W> {
    layout: &'a Layout,
    out: W,
    /// The line being written.
    buf: Vec<u8>,
    /// The next line's number.
    line: usize,
}

impl<W: Write> LayoutFile<'_, W> {
    /// One line: `fields`, their values from `get`.
    fn line(
        &mut self,
        fields: &[crate::formats::layout::Field],
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        self.buf.clear();
        self.layout
            .write_line(fields, self.line, get, &mut self.buf)?;
        self.out.write_all(&self.buf).map_err(|e| e.to_string())?;
        self.line += 1;
        Ok(())
    }
}

impl<'a, W: Write> BatchFile<'a, W> {
    /// The file's beginning, written to `out`.
    pub fn start(
        p: &'a PayoutsConfig,
        batch: &'a BatchRow,
        format: &'a BankFormat,
        out: W,
    ) -> Result<Self, String> {
        let form = match format {
            BankFormat::Pain(version) => {
                let mut w = Pain001Writer::start(
                    out,
                    *version,
                    GroupHeader {
                        msg_id: batch.batch_id.clone(),
                        created: batch.created.clone(),
                        count: batch.count,
                        total_fen: batch.total_fen,
                        initiator: p.initiator.clone(),
                    },
                )
                .map_err(|e| e.to_string())?;
                w.block(PaymentBlock {
                    id: batch.batch_id.clone(),
                    execution_date: format!("{}-{:02}", batch.period, p.execution_day),
                    debtor_name: p.debtor_name.clone(),
                    debtor_account: p.debtor_account.clone(),
                    debtor_bank: p.debtor_bank.clone(),
                    count: batch.count,
                    total_fen: batch.total_fen,
                })
                .map_err(|e| e.to_string())?;
                Form::Pain(Box::new(w))
            }
            BankFormat::Layout(layout) => {
                let mut file = LayoutFile {
                    layout,
                    out,
                    buf: Vec::with_capacity(256),
                    line: 1,
                };
                if !layout.payments.header.is_empty() {
                    file.line(&layout.payments.header, &Self::group(p, batch))
                        .map_err(|e| format!("batch {}: {e}", batch.batch_id))?;
                }
                Form::Layout(file)
            }
        };
        Ok(BatchFile {
            p,
            batch,
            form,
            written: 0,
        })
    }

    /// The values a layout's header and trailer may name.
    fn group(p: &'a PayoutsConfig, batch: &'a BatchRow) -> impl Fn(&str) -> Option<String> + 'a {
        move |k: &str| -> Option<String> {
            Some(match k {
                "batch_id" => batch.batch_id.clone(),
                "period" => batch.period.clone(),
                "created" => batch.created.clone(),
                "date" => batch.created.get(..10).unwrap_or_default().replace('-', ""),
                "execution_date" => {
                    format!("{}{:02}", batch.period.replace('-', ""), p.execution_day)
                }
                "count" => batch.count.to_string(),
                "total_fen" => batch.total_fen.to_string(),
                "total" => crate::formats::pain::amount(batch.total_fen),
                "debtor_account" => p.debtor_account.clone(),
                "debtor_name" => p.debtor_name.clone(),
                "debtor_bank" => p.debtor_bank.clone(),
                "initiator" => p.initiator.clone(),
                _ => return None,
            })
        }
    }

    /// The next payment in the batch's order.
    pub fn payment(&mut self, pay: &PaymentRow) -> Result<(), String> {
        let v: serde_json::Value = serde_json::from_slice(&pay.record)
            .map_err(|e| format!("payment {}: {e}", pay.payment_id))?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        self.written += 1;
        let batch_id = &self.batch.batch_id;
        match &mut self.form {
            Form::Pain(w) => w
                .transfer(&Transfer {
                    end_to_end_id: pay.payment_id.clone(),
                    amount_fen: pay.amount_fen,
                    creditor_name: s("creditor_name"),
                    creditor_account: s("creditor_account"),
                    creditor_bank: Some(pay.bank_code.clone()),
                    remittance: s("remittance_info"),
                })
                .map_err(|e| format!("batch {batch_id}: {e}")),
            Form::Layout(file) => {
                let seq = self.written;
                let detail = |k: &str| -> Option<String> {
                    Some(match k {
                        "seq" => seq.to_string(),
                        "payment_id" => pay.payment_id.clone(),
                        "creditor_account" => s("creditor_account"),
                        "creditor_name" => s("creditor_name"),
                        "bank_code" => pay.bank_code.clone(),
                        "amount_fen" => pay.amount_fen.to_string(),
                        "amount" => crate::formats::pain::amount(pay.amount_fen),
                        "remittance" => s("remittance_info"),
                        _ => return None,
                    })
                };
                file.line(&file.layout.payments.detail, &detail)
                    .map_err(|e| format!("batch {batch_id}: payment {}: {e}", pay.payment_id))
            }
        }
    }

    /// The file's end (a pain.001 checks the count and total it declared);
    /// the writer, flushed.
    pub fn finish(self) -> Result<W, String> {
        let batch_id = &self.batch.batch_id;
        let err = |e: String| format!("batch {batch_id}: {e}");
        let mut out = match self.form {
            Form::Pain(w) => w.finish().map_err(|e| err(e.to_string()))?,
            Form::Layout(mut file) => {
                if !file.layout.payments.trailer.is_empty() {
                    file.line(
                        &file.layout.payments.trailer,
                        &Self::group(self.p, self.batch),
                    )
                    .map_err(err)?;
                }
                file.out
            }
        };
        out.flush().map_err(|e| err(e.to_string()))?;
        Ok(out)
    }
}
