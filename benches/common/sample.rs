//! The sample transfer the payment-file benches write: the `i`-th
//! living subsidy payment of November 2026.

use tongban::formats::pain::Transfer;

/// The `i`-th sample transfer.
pub fn transfer(i: u64) -> Transfer {
    Transfer {
        end_to_end_id: format!("LIVING-11010519{:010}-2026-11", i),
        amount_fen: 11_000 + (i % 7) as i64 * 1_000,
        creditor_name: "张三".into(),
        creditor_account: format!("62170000{:011}", i),
        creditor_bank: Some("105100000017".into()),
        remittance: "困难残疾人生活补贴 2026-11".into(),
    }
}
