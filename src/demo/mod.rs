//! `tongban demo`: the whole one-application chain end to end, on this
//! machine, with one command.
//!
//! It starts the simulators of the systems in-process on 127.0.0.1 (fault
//! switches on): by default two provinces' (the main one of every province
//! but Shandong, and Shandong's), each with its own platform, card,
//! subsidies, pension, employment, civil-affairs and bank systems, against
//! one national certificate system. It writes each province's hub
//! configuration into the work directory (the shipped connectors, mappings
//! and schemas, pointed at the simulators, with the simulators' capacity as
//! rate limits and short poll intervals, confined to the province), runs
//! the hubs on the embedded SQLite store, files N synthetic one-application
//! forms (a few percent of them bad), and follows them through certificate,
//! card, subsidies, pension, employment and status updates to the month's
//! payout list. It prints a report and writes `DIR/report.json`, whose
//! `invariants` say whether each person got exactly what the rules give
//! them, and exits 0 only if every invariant holds.
//!
//! The parts: `scenario` starts the simulators and writes the hub's
//! configuration; `model` makes the synthetic people and says, for each,
//! what the rules give them (the specification the report checks the
//! systems against, independent of the hub's store); `phases` runs the
//! application chain and the bank leg; `report` compares what the
//! simulated systems saw with the model and writes the report.
//!
//! Layer 9: uses the hub, the simulators, the payout register, the store
//! and the domain; the CLI calls it.

mod model;
mod phases;
mod report;
pub mod scenario;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// What the demo is asked to do.
#[derive(Clone, Debug)]
pub struct DemoArgs {
    /// Applicants.
    pub people: usize,
    /// Months: the first, and the months after in simulated time.
    pub months: usize,
    /// Provincial hubs: 1 (one hub for every county), or 2 (Shandong's
    /// own hub and systems beside the main one's, people moving there).
    pub provinces: usize,
    /// Work directory (configuration, store, report); the demo owns it.
    pub workdir: PathBuf,
    /// Where the shipped configuration is.
    pub config: PathBuf,
    /// Seed of the synthetic data.
    pub seed: u64,
    /// Switch the simulators' faults off.
    pub no_faults: bool,
    /// The employment department over front-end tables in this database
    /// (`postgres://…` or `mysql://…`) instead of HTTP.
    pub employment_tables: Option<String>,
    /// The bank's channel over SFTP: a private OpenSSH server serves the
    /// bank's directory, the hub uploads payment files to it and picks
    /// the result files up from it.
    pub bank_sftp: bool,
    /// Give up after this long.
    pub timeout: Duration,
}

/// `tongban demo`.
pub fn demo(args: DemoArgs) -> ExitCode {
    let rt = crate::hub::runtime();
    match rt.block_on(phases::run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
