//! Cross-bank: four banks in two regions fine-tune one model of prime borrowers on Lending
//! Club loans. Each region has its own aggregator (residency: an update is processed only in
//! its bank's region), combining with a trimmed mean; each bank trains with record-level
//! DP-SGD under its own ε budget, on its own terms. The run checks what it promises: every
//! update stayed in its region, no bank spent more than its budget, and the federated model
//! is better than where it started.
//!
//!   examples/cross_bank/run.sh              # builds, then runs 12 rounds
//!   ROUNDS=4 examples/cross_bank/run.sh

use anyhow::{bail, ensure, Context};
use fedsilo::privacy::budget::PrivacyBook;
use serde_json::Value;
use testkit::sandbox::{
    adapt_federation_file, add_pooled_reference, AggregatorSpec, ExampleRun, Sandbox, SandboxSpec,
    SiloSpec,
};

/// The banks: name, region, and which regional slice of the loans they hold.
const BANKS: [(&str, &str, &str); 4] = [
    ("atlantic", "east", "northeast"),
    ("gulf", "east", "south"),
    ("prairie", "west", "midwest"),
    ("pacific", "west", "west"),
];

/// Each bank's record-level DP-SGD: per-example clipping norm, noise multiplier, ε budget at δ.
const DP_CLIP: f64 = 1.0;
const DP_NOISE: f64 = 1.1;
const DP_BUDGET: f64 = 8.0;
const DP_DELTA: f64 = 1e-5;

/// Example-weighted held-out AUC of a committed round (NaN if no silo scored it).
fn auc(round: &Value) -> f64 {
    fedsilo::report::weighted_score(&round["eval"]).unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    let ExampleRun {
        here,
        rounds,
        work,
        bins,
    } = ExampleRun::prepare("cross_bank", 12)?;
    let loans = here.join("../loans");
    let mut federation: toml::Table = toml::from_str(&adapt_federation_file(
        &here.join("federation.toml"),
        rounds,
    )?)?;
    // The non-private reference: the same model trained on the four banks' rows together
    // (without DP-SGD), which only this example, holding all the data, can compute.
    let data: Vec<_> = BANKS
        .iter()
        .map(|(_, _, slice)| loans.join(format!("data/{slice}.csv")))
        .collect();
    add_pooled_reference(&bins, &mut federation, &data, &work)?;
    let federation = toml::to_string(&federation)?;
    let policy = std::fs::read_to_string(here.join("policy.toml"))?;
    let silos = BANKS
        .iter()
        .map(|(name, region, slice)| SiloSpec {
            name: name.to_string(),
            region: Some(region.to_string()),
            aggregator: Some(format!("agg-{region}")),
            data: loans.join(format!("data/{slice}.csv")),
            args: [
                "--dp-clip",
                &DP_CLIP.to_string(),
                "--dp-noise-multiplier",
                &DP_NOISE.to_string(),
                "--dp-epsilon-budget",
                &DP_BUDGET.to_string(),
                "--dp-delta",
                &DP_DELTA.to_string(),
                "--dp-ledger",
                &work
                    .join(format!("{name}.privacy.jsonl"))
                    .display()
                    .to_string(),
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        })
        .collect();
    println!(
        "cross-bank: {} banks in 2 regions, {rounds} rounds, regional trimmed mean, DP-SGD ε ≤ {DP_BUDGET} per bank",
        BANKS.len()
    );
    let mut sb = Sandbox::start_spec(SandboxSpec {
        bins: &bins,
        dir: &work,
        federation_toml: &federation,
        policy_toml: &policy,
        schema: &loans.join("schema.toml"),
        silos,
        silo_args: &["--once"],
        aggregators: ["east", "west"]
            .map(|r| AggregatorSpec {
                name: format!("agg-{r}"),
                region: r.into(),
            })
            .to_vec(),
        coordinator_args: vec![],
    })?;
    sb.timeout = std::time::Duration::from_secs(300);
    println!(
        "{:>5}  {:>9}  {}",
        "round",
        "AUC",
        BANKS.map(|b| format!("{:>9}", b.0)).join("")
    );
    let finished = loop {
        let e = sb.expect("a round or the end", |e| {
            matches!(
                e["event"].as_str(),
                Some("round_committed" | "round_abandoned" | "round_rejected" | "finished")
            )
        })?;
        match e["event"].as_str() {
            Some("round_committed") => println!(
                "{:>5}  {:>9.3}  {}",
                e["round"].as_u64().unwrap_or(0),
                auc(&e),
                BANKS
                    .map(|b| format!(
                        "{:>9.3}",
                        e["eval"][b.0]["auc"].as_f64().unwrap_or(f64::NAN)
                    ))
                    .join("")
            ),
            Some("finished") => break e,
            _ => println!(
                "{:>5}  {} ({})",
                e["round"].as_u64().unwrap_or(0),
                e["event"].as_str().unwrap_or_default(),
                e["reason"].as_str().unwrap_or_default()
            ),
        }
    };
    let committed: Vec<Value> = sb.committed().into_iter().cloned().collect();
    ensure!(
        finished["error"].is_null(),
        "the federation stopped: {}",
        finished["error"]
    );
    // It writes the run report on its way out.
    let exit = sb
        .coordinator()
        .wait_exit(std::time::Duration::from_secs(60))?;
    ensure!(exit.success(), "the coordinator exited with {exit}");
    ensure!(
        committed.len() as u64 == rounds,
        "{} of {rounds} rounds committed",
        committed.len()
    );

    // Residency: each aggregator processed its own region's banks only, every round.
    println!("\nresidency (each aggregator's receive log):");
    for region in ["east", "west"] {
        let log = sb.receive_log(&format!("agg-{region}"));
        let admitted = log.iter().filter(|r| r["admitted"] == true).count();
        let foreign: Vec<&Value> = log.iter().filter(|r| r["region"] != region).collect();
        println!(
            "  agg-{region}: {admitted} updates admitted, all from region {region}: {}",
            foreign.is_empty()
        );
        ensure!(foreign.is_empty(), "agg-{region} processed {foreign:?}");
        ensure!(
            admitted as u64 == 2 * rounds,
            "agg-{region} admitted {admitted} updates, expected {}",
            2 * rounds
        );
    }

    // Privacy: each bank's own ledger.
    println!("\nrecord-level DP-SGD spend (each bank's ledger, δ = {DP_DELTA}):");
    for (name, _, _) in BANKS {
        let path = work.join(format!("{name}.privacy.jsonl"));
        let book = PrivacyBook::open(&path).with_context(|| path.display().to_string())?;
        let spent = book.max_spent(DP_DELTA);
        println!("  {name:<9} ε = {spent:.2} of {DP_BUDGET}");
        ensure!(spent > 0.0, "{name} recorded no spend");
        ensure!(spent <= DP_BUDGET, "{name} spent ε = {spent} > {DP_BUDGET}");
    }

    let (first, last) = match (committed.first(), committed.last()) {
        (Some(f), Some(l)) => (auc(f), auc(l)),
        _ => bail!("no round committed"),
    };
    println!(
        "\nheld-out AUC over all banks: {first:.3} after round 1, {last:.3} after round {rounds}"
    );
    if rounds >= 4 {
        ensure!(last > first, "the federated model did not improve");
    }
    sb.print_comparison("bank");
    println!(
        "\ncross-bank: every check passed (state and run report in {})",
        work.join("state").display()
    );
    Ok(())
}
