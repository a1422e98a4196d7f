//! The payment target's sink: delivering an instruction records it in
//! the payout register, once per payment id.

use super::*;

/// Records payment instructions in the payout register.
pub struct PaymentsSink {
    store: Arc<dyn crate::store::Register>,
}

impl PaymentsSink {
    /// A sink writing into `store`'s register.
    pub fn new(store: Arc<dyn crate::store::Register>) -> Self {
        PaymentsSink { store }
    }

    async fn record(&self, ms: &[Claimed]) -> Result<Delivered, DeliveryError> {
        let mut rows = Vec::with_capacity(ms.len());
        for m in ms {
            rows.push(payment_row(&m.payload).map_err(DeliveryError::Request)?);
        }
        let n = self
            .store
            .record_payments(rows)
            .await
            .map_err(|e| DeliveryError::Io(format!("the payout register: {e}")))?;
        Ok(Delivered {
            status_code: None,
            excerpt: Some(format!("{n} new in the payout register")),
            response_sha256: None,
        })
    }
}

/// A `PaymentInstruction` (JSON) as a register row.
pub fn payment_row(record: &[u8]) -> Result<PaymentRow, String> {
    let v: serde_json::Value = serde_json::from_slice(record)
        .map_err(|e| format!("the payment instruction is not JSON: {e}"))?;
    let s = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("the payment instruction has no {k}"))
    };
    Ok(PaymentRow {
        payment_id: s("payment_id")?,
        period: s("period")?,
        bank_code: s("creditor_bank_code")?,
        amount_fen: v["amount_fen"]
            .as_i64()
            .ok_or("the payment instruction has no amount_fen")?,
        holder_id: s("holder_id")?,
        record: record.to_vec(),
    })
}

impl Sink for PaymentsSink {
    fn deliver<'a>(&'a self, m: &'a Claimed) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.record(std::slice::from_ref(m)))
    }

    fn max_batch(&self) -> usize {
        1000
    }

    fn deliver_batch<'a>(
        &'a self,
        ms: &'a [Claimed],
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.record(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Register, StoreError};
    use std::sync::Mutex;

    /// A register in memory: what the sink recorded.
    #[derive(Default)]
    struct MemRegister(Mutex<Vec<PaymentRow>>);

    impl Register for MemRegister {
        fn record_payments(
            &self,
            rows: Vec<PaymentRow>,
        ) -> BoxFuture<'_, Result<usize, StoreError>> {
            Box::pin(async move {
                let mut all = self.0.lock().unwrap();
                let new = rows
                    .into_iter()
                    .filter(|r| all.iter().all(|a| a.payment_id != r.payment_id))
                    .collect::<Vec<_>>();
                let n = new.len();
                all.extend(new);
                Ok(n)
            })
        }
    }

    fn claimed(id: i64, payload: &str) -> Claimed {
        Claimed {
            id,
            target: "bank.payment_instructions".into(),
            key: format!("k{id}"),
            idem_key: format!("i{id}"),
            payload: payload.as_bytes().to_vec(),
            attempts: 0,
            lease: 1,
        }
    }

    #[tokio::test]
    async fn the_payments_sink_records_each_instruction_once_and_refuses_a_bad_one_for_good() {
        let reg = Arc::new(MemRegister::default());
        let sink = PaymentsSink::new(reg.clone());
        let p = |id: &str, fen: i64| {
            format!(
                r#"{{"payment_id":"{id}","holder_id":"A","period":"2026-11","creditor_bank_code":"105100000017","amount_fen":{fen}}}"#
            )
        };
        let batch = [
            claimed(1, &p("LIVING-A-2026-11", 41000)),
            claimed(2, &p("CARE-A-2026-11", 30000)),
        ];
        let d = sink.deliver_batch(&batch).await.unwrap();
        assert_eq!(d.excerpt.as_deref(), Some("2 new in the payout register"));
        let again = sink.deliver(&batch[0]).await.unwrap();
        assert_eq!(
            again.excerpt.as_deref(),
            Some("0 new in the payout register")
        );
        let rows = reg.0.lock().unwrap().clone();
        assert_eq!(rows.iter().map(|r| r.amount_fen).sum::<i64>(), 71000);
        let bad = claimed(
            3,
            r#"{"payment_id":"X","holder_id":"A","period":"2026-11","creditor_bank_code":"1"}"#,
        );
        let e = sink.deliver(&bad).await.unwrap_err();
        assert_eq!(e.class(), crate::dispatch::failure::Class::Permanent, "{e}");
        assert!(e.to_string().contains("no amount_fen"), "{e}");
    }
}
