//! The experiment behind the federation's default plan (docs/aggregation.md, "The default
//! plan"): for each candidate setting, the churn and loans federations run for real — a
//! coordinator and four silo processes over mTLS, the example's own splits — once per seed,
//! and each run's end-of-run comparison gives the example-weighted held-out AUC of the
//! federated model, of local-only training and of the pooled reference (`fedsilo-pretrain
//! --pooled`: the same trainer on all four silos' training rows). The table shows, per
//! setting and data set, the mean of federated − pooled over the seeds with a 95 % interval
//! (t distribution over the paired per-seed differences), and federated − local-only.
//!
//!   cargo build --release --workspace --examples
//!   target/release/examples/convergence                       # every setting, 5 seeds, 20 rounds
//!   SETTINGS=default,fedavg SEEDS=3 target/release/examples/convergence
//!   FIRST_SEED=6 SETTINGS=default target/release/examples/convergence   # seeds 6 to 10
//!
//! A setting is a name and the `[plan]` and `[aggregation]` tables it runs with; everything
//! else (data, splits, architecture, rounds) is the example's.

use std::collections::BTreeMap;

use anyhow::{bail, Context};

use testkit::sandbox::{
    adapt_federation_file, add_pooled_reference, comparison_auc, ExampleRun, Sandbox, SiloSpec,
};

const SILOS: [&str; 4] = ["northeast", "midwest", "south", "west"];

/// The candidates: name, `[plan]`, and `[aggregation]` (empty: the default aggregation; its
/// sub-tables written relative to it, `[server_optimizer]`).
const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "default",
        "epochs = 2\nbatch_size = 32\nlearning_rate = 0.05\n",
        "",
    ),
    (
        "fedavg",
        "epochs = 2\nbatch_size = 32\nlearning_rate = 0.05\n",
        "kernel = \"mean\"\nserver_optimizer = \"none\"\n",
    ),
    (
        "fedavg-lr2",
        "epochs = 2\nbatch_size = 32\nlearning_rate = 0.05\n",
        "kernel = \"mean\"\n[server_optimizer]\nkind = \"momentum\"\nbeta1 = 0.0\nlearning_rate = 2.0\n",
    ),
    (
        "fedavgm-0.5",
        "epochs = 2\nbatch_size = 32\nlearning_rate = 0.05\n",
        "kernel = \"mean\"\n[server_optimizer]\nkind = \"momentum\"\nbeta1 = 0.5\n",
    ),
    (
        "fedavgm-0.7",
        "epochs = 2\nbatch_size = 32\nlearning_rate = 0.05\n",
        "kernel = \"mean\"\n[server_optimizer]\nkind = \"momentum\"\nbeta1 = 0.7\n",
    ),
    (
        "fedavgm-0.9",
        "epochs = 2\nbatch_size = 32\nlearning_rate = 0.05\n",
        "kernel = \"mean\"\n[server_optimizer]\nkind = \"momentum\"\nbeta1 = 0.9\n",
    ),
    (
        "fedavgm-0.8",
        "epochs = 2\nbatch_size = 32\nlearning_rate = 0.05\n",
        "kernel = \"mean\"\n[server_optimizer]\nkind = \"momentum\"\nbeta1 = 0.8\n",
    ),
    (
        "fedavgm-0.85",
        "epochs = 2\nbatch_size = 32\nlearning_rate = 0.05\n",
        "kernel = \"mean\"\n[server_optimizer]\nkind = \"momentum\"\nbeta1 = 0.85\n",
    ),
    (
        "fedavgm-0.9-1ep",
        "epochs = 1\nbatch_size = 32\nlearning_rate = 0.05\n",
        "kernel = \"mean\"\n[server_optimizer]\nkind = \"momentum\"\nbeta1 = 0.9\n",
    ),
    (
        "fedavgm-0.8-4ep",
        "epochs = 4\nbatch_size = 32\nlearning_rate = 0.05\n",
        "kernel = \"mean\"\n[server_optimizer]\nkind = \"momentum\"\nbeta1 = 0.8\n",
    ),
    (
        "fedavgm-0.85-cos",
        "epochs = 2\nbatch_size = 32\nlearning_rate = 0.05\n",
        "kernel = \"mean\"\n[server_optimizer]\nkind = \"momentum\"\nbeta1 = 0.85\nschedule = \"cosine\"\n",
    ),
    (
        "fedavgm-0.9-cos",
        "epochs = 2\nbatch_size = 32\nlearning_rate = 0.05\n",
        "kernel = \"mean\"\n[server_optimizer]\nkind = \"momentum\"\nbeta1 = 0.9\nschedule = \"cosine\"\n",
    ),
    (
        "fedavgm-0.95-cos",
        "epochs = 2\nbatch_size = 32\nlearning_rate = 0.05\n",
        "kernel = \"mean\"\n[server_optimizer]\nkind = \"momentum\"\nbeta1 = 0.95\nschedule = \"cosine\"\n",
    ),
    (
        "fedadam",
        "epochs = 2\nbatch_size = 32\nlearning_rate = 0.05\n",
        "kernel = \"mean\"\n[server_optimizer]\nkind = \"adam\"\nlearning_rate = 0.01\n",
    ),
    (
        "fedavg-4ep",
        "epochs = 4\nbatch_size = 32\nlearning_rate = 0.05\n",
        "kernel = \"mean\"\n[server_optimizer]\nkind = \"momentum\"\nbeta1 = 0.0\nlearning_rate = 1.0\n",
    ),
    (
        "fedprox",
        "epochs = 2\nbatch_size = 32\nlearning_rate = 0.05\nprox_mu = 0.01\n",
        "kernel = \"mean\"\n[server_optimizer]\nkind = \"momentum\"\nbeta1 = 0.0\nlearning_rate = 1.0\n",
    ),
];

/// One run's example-weighted held-out AUCs.
#[derive(Debug, Clone, Copy)]
struct Scores {
    local: f64,
    federated: f64,
    pooled: f64,
}

/// Runs `data_set` with `setting` and `seed`; the weighted AUCs of its comparison.
fn run(
    ex: &ExampleRun,
    data_set: &str,
    (name, plan, aggregation): (&str, &str, &str),
    seed: u64,
) -> anyhow::Result<Scores> {
    let here = ex.here.join("..").join(data_set);
    let dir = ex.work.join(format!("{data_set}-{name}-{seed}"));
    std::fs::create_dir_all(&dir)?;
    let mut t: toml::Table = toml::from_str(&adapt_federation_file(
        &here.join("federation.toml"),
        ex.rounds,
    )?)?;
    let table =
        |s: &str| -> anyhow::Result<toml::Value> { Ok(toml::from_str::<toml::Table>(s)?.into()) };
    t.insert("plan".into(), table(plan)?);
    if aggregation.is_empty() {
        t.remove("aggregation");
    } else {
        t.insert("aggregation".into(), table(aggregation)?);
    }
    if let Some(toml::Value::Table(m)) = t.get_mut("model") {
        m.insert("seed".into(), toml::Value::Integer(seed as i64));
    }
    let data: Vec<_> = SILOS
        .iter()
        .map(|s| here.join(format!("data/{s}.csv")))
        .collect();
    add_pooled_reference(&ex.bins, &mut t, &data, &dir)?;
    let policy = std::fs::read_to_string(here.join("policy.toml"))?;
    let silos = SILOS
        .iter()
        .map(|s| SiloSpec {
            name: s.to_string(),
            data: here.join(format!("data/{s}.csv")),
            ..Default::default()
        })
        .collect();
    let mut sb = Sandbox::start(
        &ex.bins,
        &dir,
        &toml::to_string(&t)?,
        &policy,
        &here.join("schema.toml"),
        silos,
        &["--once"],
    )?;
    let c = sb.expect("comparison", |e| e["event"] == "comparison")?;
    let rows = c["rows"].as_array().context("comparison without rows")?;
    Ok(Scores {
        local: comparison_auc(rows, "local"),
        federated: comparison_auc(rows, "federated"),
        pooled: comparison_auc(rows, "pooled"),
    })
}

/// Mean and half-width of a 95 % t interval.
fn interval(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, f64::NAN);
    }
    let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    // Two-sided 97.5 % quantiles of t for 1..=9 degrees of freedom (then ≈ normal).
    const T: [f64; 9] = [12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26];
    let t = T.get(xs.len() - 2).copied().unwrap_or(1.96);
    (mean, t * sd / n.sqrt())
}

fn main() -> anyhow::Result<()> {
    let ex = ExampleRun::prepare("convergence", 20)?;
    let seeds: u64 = std::env::var("SEEDS").ok().map_or(Ok(5), |s| s.parse())?;
    let first: u64 = std::env::var("FIRST_SEED")
        .ok()
        .map_or(Ok(1), |s| s.parse())?;
    let wanted: Option<Vec<String>> = std::env::var("SETTINGS")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let settings: Vec<_> = SETTINGS
        .iter()
        .filter(|(n, _, _)| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == n)))
        .copied()
        .collect();
    if settings.is_empty() {
        bail!(
            "SETTINGS names none of: {}",
            SETTINGS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
        );
    }
    println!(
        "{} setting(s) × churn, loans × {seeds} seed(s), {} rounds each; weighted held-out AUC",
        settings.len(),
        ex.rounds
    );
    let mut results: BTreeMap<(String, &str), Vec<Scores>> = BTreeMap::new();
    for setting in &settings {
        for data_set in ["churn", "loans"] {
            for seed in first..first + seeds {
                let s = run(&ex, data_set, *setting, seed)
                    .with_context(|| format!("{} on {data_set}, seed {seed}", setting.0))?;
                eprintln!(
                    "{:<12} {data_set:<6} seed {seed}: local {:.4} federated {:.4} pooled {:.4}",
                    setting.0, s.local, s.federated, s.pooled
                );
                results
                    .entry((setting.0.to_string(), data_set))
                    .or_default()
                    .push(s);
            }
        }
    }
    println!(
        "\n| setting | data | federated | pooled | local only | federated − pooled (95 % CI) | federated − local |"
    );
    println!("|---|---|---|---|---|---|---|");
    for ((name, data_set), runs) in &results {
        let mean = |f: fn(&Scores) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
        let gap: Vec<f64> = runs.iter().map(|s| s.federated - s.pooled).collect();
        let (g, h) = interval(&gap);
        println!(
            "| {name} | {data_set} | {:.4} | {:.4} | {:.4} | {g:+.4} ± {h:.4} | {:+.4} |",
            mean(|s| s.federated),
            mean(|s| s.pooled),
            mean(|s| s.local),
            mean(|s| s.federated - s.local)
        );
    }
    Ok(())
}
