//! The settings of a `kind = "payout_register"` connector: sink operations
//! of `PayoutHold` records, and nothing else.

use crate::config::ConnectorSpec;
use crate::connectors::settings::Problems;
use crate::diag::Problem;

/// The schema of the records a hold operation takes.
pub const SCHEMA: &str = "PayoutHold";

/// A payout register connector.
#[derive(Clone, Debug)]
pub struct RegisterSettings {
    /// The hold operations, by name.
    pub operations: Vec<String>,
}

impl RegisterSettings {
    /// The settings a connector file gives, or every problem in it.
    pub fn of(spec: &ConnectorSpec) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        if spec.base_url.is_some()
            || spec.brokers.is_some()
            || spec.directory.is_some()
            || spec.calendar.is_some()
            || !spec.stages.is_empty()
        {
            p.connector(
                None,
                "base_url, brokers, directory, calendar and stages are settings of other kinds; a payout_register connector has only operations",
            );
        }
        let operations = p.register_sinks(spec, "payout_register", "the payout register", SCHEMA);
        p.or(RegisterSettings { operations })
    }
}
