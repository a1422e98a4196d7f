//! The hold target's sink: a stop the payout register must keep to (a
//! death registered by civil affairs or public security, a bank's MD07).
//!
//! A `PayoutHold` names a person and the first month nothing more may be
//! paid to them. Delivering it holds their payments in the register from
//! that month on, so that no batch made afterwards takes them; and raises a
//! `paid_after_stop` alarm for each of those payments that was already in a
//! batch file (the death came after the month's file went out): the office
//! recovers it (追回) if the bank paid it. Holding again is harmless: the
//! earliest month stays, and an alarm already raised stays as it was.

use super::*;

/// Holds payments in the payout register.
pub struct HoldsSink {
    store: Arc<Store>,
}

impl HoldsSink {
    /// A sink holding payments in `store`'s register.
    pub fn new(store: Arc<Store>) -> Self {
        HoldsSink { store }
    }

    async fn hold(&self, m: &Claimed) -> Result<Delivered, DeliveryError> {
        let h = hold_of(&m.payload).map_err(DeliveryError::Request)?;
        let held = self
            .store
            .hold_payments(&h.holder_id, &h.from_period, &h.reason)
            .await
            .map_err(|e| DeliveryError::Io(format!("the payout register: {e}")))?;
        let masked = crate::domain::mask::id_number(&h.holder_id);
        let alarms: Vec<NewAlarm> = held
            .iter()
            .map(|p| NewAlarm {
                batch_id: p.batch_id.clone(),
                kind: "paid_after_stop".into(),
                // The masked id is not unique (two holders of one county
                // can share its last digits): the place in the file is.
                detail: format!(
                    "payment {} ({} fen, {}; transfer {} of batch {}) was sent before the holder's stop ({}, from {}) was known: {}",
                    p.payment_id.replace(&h.holder_id, &masked),
                    p.amount_fen,
                    p.period,
                    p.position + 1,
                    p.batch_id,
                    h.reason,
                    h.from_period,
                    match p.result.as_deref() {
                        Some("ACCEPTED") => "the bank paid it; recover it (追回)",
                        Some("REJECTED") => "the bank did not pay it; do not re-issue it",
                        _ => "the bank has not answered; recover it if it pays",
                    }
                ),
            })
            .collect();
        let n = alarms.len();
        self.store
            .raise_alarms(alarms)
            .await
            .map_err(|e| DeliveryError::Io(format!("the payout register: {e}")))?;
        Ok(Delivered {
            status_code: None,
            excerpt: Some(format!(
                "payments of {masked} held from {}; {n} already in a batch file",
                h.from_period
            )),
            response_sha256: None,
        })
    }
}

/// A `PayoutHold` as read from its JSON.
#[derive(Debug, PartialEq, Eq)]
pub struct Hold {
    /// The person (ID number).
    pub holder_id: String,
    /// The first month nothing more is paid, `YYYY-MM`.
    pub from_period: String,
    /// Why (`DECEASED`, …).
    pub reason: String,
}

/// Reads a `PayoutHold` (JSON); Err says what is missing or wrong.
pub fn hold_of(record: &[u8]) -> Result<Hold, String> {
    let v: serde_json::Value =
        serde_json::from_slice(record).map_err(|e| format!("the hold is not JSON: {e}"))?;
    let s = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("the hold has no {k}"))
    };
    let from_period = s("from_period")?;
    crate::schema::Format::Period
        .check(&from_period)
        .map_err(|e| format!("the hold's from_period: {e}"))?;
    Ok(Hold {
        holder_id: s("holder_id")?,
        from_period,
        reason: s("reason")?,
    })
}

impl Sink for HoldsSink {
    fn deliver<'a>(&'a self, m: &'a Claimed) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.hold(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_needs_a_person_a_month_and_a_reason() {
        let ok = br#"{"holder_id": "140105196309090071", "from_period": "2027-01", "reason": "DECEASED", "occurred_at": 1}"#;
        assert_eq!(
            hold_of(ok).unwrap(),
            Hold {
                holder_id: "140105196309090071".into(),
                from_period: "2027-01".into(),
                reason: "DECEASED".into()
            }
        );
        assert_eq!(
            hold_of(br#"{"holder_id": "1", "from_period": "2027-13", "reason": "X"}"#).unwrap_err(),
            "the hold's from_period: invalid period \"2027-13\": expected YYYY-MM"
        );
        assert_eq!(
            hold_of(br#"{"from_period": "2027-01", "reason": "X"}"#).unwrap_err(),
            "the hold has no holder_id"
        );
    }
}
