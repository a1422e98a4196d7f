//! Instruction counts of one mapping, for callgrind (wall-clock time on a
//! shared machine is noisy; instruction counts are not):
//!
//! ```sh
//! cargo build --release --example eval_profile
//! valgrind --tool=callgrind --toggle-collect='tongban::mapping::Program::run' \
//!     target/release/examples/eval_profile 2   # 2 passes over 20,000 records
//! ```
//! Instructions per record = the total it prints / 40,000.

use tongban::config::Config;
use tongban::synth::{issued_event, person, Rng};
fn main() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cfg = Config::load(&root).0.unwrap();
    let m = &cfg.mappings["certificate_issued_to_card_load"];
    let mut rng = Rng::new(42);
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
    let parsed: Vec<_> = (0..20_000u64)
        .map(|i| {
            let p = person(&mut rng);
            m.decode_json(issued_event(&mut rng, &p, i, day).to_string().as_bytes())
                .unwrap()
        })
        .collect();
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);
    let mut k = 0;
    for _ in 0..n {
        for d in &parsed {
            if let Ok(tongban::mapping::Outcome::Mapped { .. }) =
                std::hint::black_box(m.program.run(d))
            {
                k += 1;
            }
        }
    }
    println!("{k}");
}
