//! `silo-node`: runs one silo of a fedsilo federation.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use silo_node::node::{run, SiloSettings};

/// Run one silo of a fedsilo federation.
///
/// The silo keeps its data: it loads a CSV file under the federation's schema, links to the
/// coordinator over mutual TLS with its own certificate, and trains the model it is sent. Only
/// model updates, example counts, feature sums and metrics ever leave it.
///
/// Examples:
///   silo-node --kit certs/bank-a --coordinator 10.0.0.5:7443 \
///             --data bank-a.csv --schema schema.toml
///
///   # a text model prepared with fedsilo-model (its files checked by digest)
///   silo-node --kit certs/retailer-a --coordinator 10.0.0.5:7443 \
///             --data reviews.csv --manifest model/manifest.toml \
///             --model-dir /opt/models/all-MiniLM-L6-v2
///
///   # keep the versions the coordinator deploys, then score customers with it, offline
///   silo-node --kit certs/bank-a --coordinator 10.0.0.5:7443 --data bank-a.csv \
///             --schema schema.toml --deploy-dir /var/lib/fedsilo/deployed
///   silo-node score --kit certs/bank-a --deploy-dir /var/lib/fedsilo/deployed \
///             --schema schema.toml --in customers.csv --out scores.csv
///
/// `silo-node score --help` tells more about scoring; `silo-node status --help` about the
/// status a running node writes (--status-file).
#[derive(Debug, Parser)]
#[command(name = "silo-node", version, verbatim_doc_comment)]
struct Cli {
    /// Certificate kit directory made by `fedsilo certs init` (ca.pem, cert.pem, key.pem).
    /// The silo's name and region come from this certificate.
    #[arg(long)]
    kit: PathBuf,
    /// The coordinator's address, host:port.
    #[arg(long)]
    coordinator: String,
    /// The coordinator's node name; its certificate must carry it.
    #[arg(long, default_value = "coordinator")]
    coordinator_name: String,
    /// The regional aggregator to serve this silo's updates to, host:port (federations that
    /// aggregate by region; see docs/configuration.md, residency).
    #[arg(long)]
    aggregator: Option<String>,
    /// The regional aggregator's node name; its certificate must carry it (role aggregator).
    #[arg(long, requires = "aggregator")]
    aggregator_name: Option<String>,
    /// This silo's data: a CSV file with a header row.
    #[arg(long)]
    data: PathBuf,
    /// The federation's schema (TOML): target, numeric and categorical features (the built-in
    /// MLP on tabular data).
    #[arg(
        long,
        required_unless_present = "manifest",
        conflicts_with = "manifest"
    )]
    schema: Option<PathBuf>,
    /// A model's manifest (written by fedsilo-model): the federation trains that model, on the
    /// text or label columns it names. Needs --model-dir.
    #[arg(long, requires = "model_dir")]
    manifest: Option<PathBuf>,
    /// The directory holding the manifest's files (e.g. model.safetensors, tokenizer.json),
    /// each checked against the SHA-256 the manifest pins. Files it lacks are received from
    /// the coordinator (when its federation file sets [model] files) and written here, each
    /// kept only if its SHA-256 is the one this silo's manifest pins.
    #[arg(long, requires = "manifest")]
    model_dir: Option<PathBuf>,
    /// The held-out rows in a file of their own, never trained on (with --manifest; --data is
    /// then all training rows). Default: a --holdout fraction of --data.
    #[arg(long, requires = "manifest", conflicts_with_all = ["holdout", "evaluate_only"])]
    holdout_data: Option<PathBuf>,
    /// Fraction of rows held out for evaluation (never trained on).
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// Run as a central hold-out: every row is evaluation data; this node scores candidates
    /// for the validation gate and never trains (name it in the policy's
    /// `validation.central_holdout`).
    #[arg(long)]
    evaluate_only: bool,
    /// Seed of the train/held-out split.
    #[arg(long, default_value_t = 1)]
    split_seed: u64,
    /// Exit when the coordinator goes away instead of reconnecting.
    #[arg(long)]
    once: bool,
    /// Longest wait between reconnection attempts, seconds.
    #[arg(long, default_value_t = 10.0)]
    max_backoff_secs: f64,
    /// Threads the BLAS library (OpenBLAS) may use for training and scoring. Default: 1, or
    /// OPENBLAS_NUM_THREADS if set; more helps a large model on a machine of its own, while
    /// idle BLAS threads spin between a small model's steps.
    #[arg(long)]
    blas_threads: Option<usize>,
    /// Record-level DP-SGD: clip each example's gradient to this L2 norm (with
    /// --dp-noise-multiplier). The silo applies it on its own terms, whatever the coordinator
    /// asks, and prints the ε spent so far after each round.
    #[arg(long, requires = "dp_noise_multiplier")]
    dp_clip: Option<f32>,
    /// Record-level DP-SGD: Gaussian noise of this many times the clipping norm per lot.
    #[arg(long, requires = "dp_clip")]
    dp_noise_multiplier: Option<f32>,
    /// δ at which the silo reports its DP-SGD spend (below 1 / its number of customers).
    #[arg(long, default_value_t = 1e-5)]
    dp_delta: f64,
    /// Record-level DP-SGD: the largest ε this silo lets its data spend, at --dp-delta; a round
    /// that would pass it is refused (the coordinator sees the reason). Default: no cap.
    #[arg(long, requires = "dp_clip")]
    dp_epsilon_budget: Option<f64>,
    /// Record-level DP-SGD: the file where this silo records its spend, synced before each
    /// round, so that a restart never forgets what was spent (required with --dp-clip).
    #[arg(long, requires = "dp_clip")]
    dp_ledger: Option<PathBuf>,
    /// Train with this program instead of the built-in trainer (e.g. a PyTorch script). Each
    /// round it runs as `PROGRAM [--trainer-arg ...] WORKDIR`, reads base.safetensors,
    /// train.safetensors and plan.json there and writes weights.safetensors and metrics.json;
    /// the node checks them and applies the federation's clipping, noise and masking itself.
    /// With --manifest it trains that model, whatever its architecture: request.json,
    /// base.safetensors and train.csv or rows.csv in, weights.safetensors and metrics.json or
    /// probabilities.json out (docs/fine-tuning.md). See examples/trainers/.
    #[cfg_attr(
        feature = "fault-injection",
        arg(long, conflicts_with_all = ["dp_clip", "attack"])
    )]
    #[cfg_attr(
        not(feature = "fault-injection"),
        arg(long, conflicts_with = "dp_clip")
    )]
    trainer: Option<PathBuf>,
    /// An argument for --trainer, before the work directory (repeat for several).
    #[arg(long = "trainer-arg", requires = "trainer", allow_hyphen_values = true)]
    trainer_args: Vec<String>,
    /// Stop the --trainer program after this many seconds and refuse the round.
    #[arg(long, default_value_t = 600.0, requires = "trainer")]
    trainer_timeout_secs: f64,
    /// Where --trainer work directories are made (private to this user, deleted after each
    /// round). Default: the system temporary directory.
    #[arg(long, requires = "trainer")]
    trainer_workdir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9465 (plain HTTP and
    /// unauthenticated, so a loopback address only).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Keep the model versions the coordinator deploys in this directory (each checked against
    /// the coordinator's signature and its digest, written atomically); `silo-node score`
    /// scores with the one deployed. Without it this silo refuses deployments.
    #[arg(long)]
    deploy_dir: Option<PathBuf>,
    /// Write what the silo is doing to this file on every change (waiting for the coordinator,
    /// linked, training round N, blocked and why, stopped; its last round; the version
    /// deployed): `silo-node status --status-file FILE` reads it.
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Fault injection (only in builds with the `fault-injection` feature, for tests).
    #[cfg(feature = "fault-injection")]
    #[command(flatten)]
    faults: silo_node::faults::FaultArgs,
    /// Log filter (tracing syntax), e.g. `warn` or `silo_node=debug`. RUST_LOG overrides. The
    /// default says what the silo does: one line per round, its links, its data.
    #[arg(long, default_value = "warn,silo_node=info,fedsilo=info")]
    log: String,
    /// Log lines as text, or as one JSON object per line for a log shipper.
    #[arg(long, value_enum, default_value_t = fedsilo::logging::LogFormat::Text)]
    log_format: fedsilo::logging::LogFormat,
}

/// Score a CSV with the model version deployed at this silo, offline.
///
/// Reads the version the coordinator deployed to this silo (`silo-node --deploy-dir`),
/// checks it again — the coordinator's signature against the kit's consortium CA, the values
/// against their digest — and writes every input row with its scores and the model's version
/// and digest. Nothing is sent anywhere; the label column may be absent.
///
/// Scores: `p_<positive>` for a binary model (`p_<class>` for each of several classes) and
/// `predicted`; `prediction` for a regression.
///
/// Examples:
///   silo-node score --kit certs/bank-a --deploy-dir /var/lib/fedsilo/deployed \
///             --schema schema.toml --in customers.csv --out scores.csv
///
///   silo-node score --kit certs/retailer-a --deploy-dir deployed \
///             --manifest model/manifest.toml --model-dir /opt/models/all-MiniLM-L6-v2 \
///             --in new-reviews.csv --out scored-reviews.csv
#[derive(Debug, Parser)]
#[command(name = "silo-node score", version, verbatim_doc_comment)]
struct ScoreCli {
    /// The silo's certificate kit (its ca.pem checks the deployment's signature).
    #[arg(long)]
    kit: PathBuf,
    /// The silo's deployment directory (the node's --deploy-dir).
    #[arg(long)]
    deploy_dir: PathBuf,
    /// The coordinator's node name the deployment must be signed by.
    #[arg(long, default_value = "coordinator")]
    coordinator_name: String,
    /// The rows to score: a CSV file with a header row.
    #[arg(long = "in")]
    input: PathBuf,
    /// Where to write the scored rows (replaced atomically).
    #[arg(long = "out")]
    output: PathBuf,
    /// The federation's schema (the built-in MLP on tabular data).
    #[arg(
        long,
        required_unless_present = "manifest",
        conflicts_with = "manifest"
    )]
    schema: Option<PathBuf>,
    /// The model's manifest (a described model, e.g. the text classifier). Needs --model-dir.
    #[arg(long, requires = "model_dir")]
    manifest: Option<PathBuf>,
    /// The directory of the manifest's files.
    #[arg(long, requires = "manifest")]
    model_dir: Option<PathBuf>,
}

/// What a silo is doing, from the status file its node writes.
///
/// Prints one line — waiting for the coordinator, linked, training round N, blocked by the
/// coordinator and why, or stopped; its last round; the version deployed — and exits 0 if the
/// node runs and is not blocked, 1 otherwise (for a monitoring check or a container probe).
///
/// Example:
///   silo-node status --status-file /var/lib/fedsilo/status.json
#[derive(Debug, Parser)]
#[command(name = "silo-node status", version, verbatim_doc_comment)]
struct StatusCli {
    /// The node's --status-file.
    #[arg(long)]
    status_file: PathBuf,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

/// `silo-node status …`.
fn status(args: impl Iterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    let cli = StatusCli::parse_from(args);
    match silo_node::status::read(&cli.status_file) {
        Ok((s, running)) => {
            if cli.json {
                println!("{}", serde_json::json!({ "running": running, "status": s }));
            } else if running {
                println!("{}", s.describe());
            } else {
                println!("{} (the node is not running)", s.describe());
            }
            let blocked = s.blocked.is_some();
            if running && !blocked {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("silo-node status: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `silo-node score …`.
fn score(args: impl Iterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    let cli = ScoreCli::parse_from(args);
    let model = match (cli.schema, cli.manifest, cli.model_dir) {
        (_, Some(manifest), Some(model_dir)) => silo_node::score::ScoredModel::Manifest {
            manifest,
            model_dir,
        },
        (Some(schema), _, _) => silo_node::score::ScoredModel::Schema(schema),
        _ => {
            eprintln!(
                "silo-node score: error: give --schema FILE or --manifest FILE --model-dir DIR"
            );
            return std::process::ExitCode::FAILURE;
        }
    };
    let settings = silo_node::score::ScoreSettings {
        kit: cli.kit,
        deploy_dir: cli.deploy_dir,
        coordinator_name: cli.coordinator_name,
        input: cli.input,
        output: cli.output,
        model,
    };
    match silo_node::score::score(&settings) {
        Ok(s) => {
            println!(
                "scored {} rows with v{} ({}) into {}",
                s.rows,
                s.version,
                &s.digest[..12],
                settings.output.display()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("silo-node score: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os();
    let sub = std::env::args_os().nth(1);
    if sub.as_ref().is_some_and(|a| a == "score" || a == "status") {
        let program = args.next().unwrap_or_default();
        let rest = std::iter::once(program).chain(args.skip(1));
        return if sub.is_some_and(|a| a == "score") {
            score(rest)
        } else {
            status(rest)
        };
    }
    let cli = Cli::parse();
    fedsilo::logging::init(&cli.log, cli.log_format);
    match cli.blas_threads {
        Some(n) => fedsilo::blas_threads::set(n),
        None if std::env::var_os("OPENBLAS_NUM_THREADS").is_none() => fedsilo::blas_threads::set(1),
        None => {}
    }
    // Training allocates and frees large tensors every step: keep them for reuse.
    fedsilo_text::heap::keep_freed_buffers();
    // Room for connections up to the hard limit; the listeners keep a reserve within it.
    if let Err(e) = fedsilo::connection_budget::raise_open_files_limit() {
        tracing::warn!("cannot raise the open-files limit: {e}");
    }
    let settings = SiloSettings {
        kit: cli.kit,
        coordinator: cli.coordinator,
        coordinator_name: cli.coordinator_name,
        aggregator: match (cli.aggregator, cli.aggregator_name) {
            (Some(addr), Some(name)) => Some((addr, name)),
            (Some(addr), None) => {
                eprintln!("silo-node: error: --aggregator {addr} needs --aggregator-name (the name in its certificate)");
                return std::process::ExitCode::FAILURE;
            }
            _ => None,
        },
        data: cli.data,
        model: match (cli.schema, cli.manifest, cli.model_dir) {
            (_, Some(manifest), Some(model_dir)) => silo_node::node::LocalModel::Manifest {
                manifest,
                model_dir,
                holdout_data: cli.holdout_data,
            },
            (Some(schema), _, _) => silo_node::node::LocalModel::Schema(schema),
            _ => {
                eprintln!("silo-node: error: give --schema FILE (tabular data) or --manifest FILE --model-dir DIR (a prepared model)");
                return std::process::ExitCode::FAILURE;
            }
        },
        holdout: if cli.evaluate_only { 1.0 } else { cli.holdout },
        split_seed: cli.split_seed,
        once: cli.once,
        max_backoff: Duration::from_secs_f64(cli.max_backoff_secs.max(0.1)),
        #[cfg(feature = "fault-injection")]
        faults: cli.faults.faults(),
        #[cfg(not(feature = "fault-injection"))]
        faults: Default::default(),
        metrics_listen: cli.metrics_listen,
        deploy_dir: cli.deploy_dir,
        status_file: cli.status_file,
        external: match cli.trainer {
            None => None,
            Some(program) => {
                let t = cli.trainer_timeout_secs;
                if !(t.is_finite() && t > 0.0 && t <= 7.0 * 86400.0) {
                    eprintln!("silo-node: error: --trainer-timeout-secs {t}: must be a positive number of seconds, at most a week");
                    return std::process::ExitCode::FAILURE;
                }
                let workdir = cli.trainer_workdir.unwrap_or_else(std::env::temp_dir);
                let workdir = match std::fs::canonicalize(&workdir) {
                    Ok(w) => w,
                    Err(e) => {
                        eprintln!(
                            "silo-node: error: --trainer-workdir {}: {e}",
                            workdir.display()
                        );
                        return std::process::ExitCode::FAILURE;
                    }
                };
                Some(silo_node::external::ExternalTrainer {
                    program,
                    args: cli.trainer_args,
                    timeout: Duration::from_secs_f64(t),
                    workdir,
                    owner: String::new(),
                })
            }
        },
        dp_sgd: match (cli.dp_clip, cli.dp_noise_multiplier) {
            (Some(clip), Some(noise_multiplier)) => {
                let valid = clip > 0.0
                    && clip.is_finite()
                    && noise_multiplier > 0.0
                    && noise_multiplier.is_finite()
                    && cli.dp_delta > 0.0
                    && cli.dp_delta < 1.0
                    && cli
                        .dp_epsilon_budget
                        .is_none_or(|b| b.is_finite() && b > 0.0);
                if !valid {
                    eprintln!("silo-node: error: --dp-clip and --dp-noise-multiplier must be > 0, --dp-delta in (0, 1) and --dp-epsilon-budget > 0");
                    return std::process::ExitCode::FAILURE;
                }
                let Some(ledger) = cli.dp_ledger else {
                    eprintln!("silo-node: error: --dp-clip needs --dp-ledger FILE: where this silo records its privacy spend, so that a restart does not forget it");
                    return std::process::ExitCode::FAILURE;
                };
                Some(silo_node::trainer::SiloDpSgd {
                    dp: silo_node::train::dp_sgd::DpSgd {
                        clip,
                        noise_multiplier,
                    },
                    delta: cli.dp_delta,
                    epsilon_budget: cli.dp_epsilon_budget,
                    ledger,
                })
            }
            _ => None,
        },
    };
    match run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("silo-node: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
