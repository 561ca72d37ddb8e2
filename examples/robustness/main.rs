//! Robustness on real data: ten silos of the churn data, two of them Byzantine, per attack and
//! aggregation kernel the held-out ROC AUC of the honest silos after 20 rounds.
//!
//!   examples/robustness/run.sh            # builds, then runs all 16 federations
//!   ROUNDS=10 examples/robustness/run.sh

use std::path::Path;

use silo_node::attack::Attack;
use testkit::robustness::{run, Inputs, KERNELS};
use testkit::sandbox::Binaries;

fn main() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    // target/release/examples/robustness → target/release
    let bins = Binaries::in_dir(
        exe.parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new(".")),
    )?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let inputs = Inputs::in_checkout(&root);
    let rounds: u64 = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let work = tempfile_dir()?;
    let attacks: [(&str, Option<Attack>); 4] = [
        ("clean", None),
        ("sign-flip ×10", Some(Attack::SignFlip)),
        ("gaussian N(0,1)", Some(Attack::Gaussian)),
        ("ALIE z=1", Some(Attack::Alie)),
    ];
    println!(
        "held-out ROC AUC of the 8 honest silos after {rounds} rounds (2 of 10 silos Byzantine)\n"
    );
    print!("{:<18}", "attack");
    for (label, _) in KERNELS {
        print!(" {label:>20}");
    }
    println!();
    for (i, (name, attack)) in attacks.iter().enumerate() {
        print!("{name:<18}");
        for (j, (_, agg)) in KERNELS.iter().enumerate() {
            let dir = work.join(format!("run-{i}-{j}"));
            match run(&bins, &inputs, &dir, *attack, agg, rounds) {
                Ok(o) => print!(" {:>20.3}", o.honest_auc),
                Err(e) => print!(
                    " {:>20}",
                    format!("failed: {e}").chars().take(20).collect::<String>()
                ),
            }
            use std::io::Write;
            std::io::stdout().flush()?;
        }
        println!();
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("fedsilo-robustness-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
