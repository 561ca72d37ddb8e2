//! Business units: one enterprise's DSL, fibre and voice-only units learn together which
//! customers are about to leave. Secure aggregation with distributed differential privacy:
//! the coordinator only ever sees the noised sum of the three updates. Every candidate waits
//! for the change board, and this program is the board's approval workflow, the way n8n or a
//! ticket system would be wired: it hears of each candidate by signed webhook, reviews its
//! held-out figures through the admin API with a token of scope `approve`, and approves or
//! rejects it there. It checks that every decision went through the API and is journaled under
//! the token's name, that every version came out of secure aggregation, and the privacy spend.
//!
//!   examples/business_units/run.sh              # builds, then runs 10 rounds
//!   ROUNDS=3 examples/business_units/run.sh

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use fedsilo::admin::{tokens, AdminClient, Scope};
use fedsilo::report::weighted_score;
use serde_json::{json, Value};
use testkit::sandbox::{
    adapt_federation_file, add_pooled_reference, ExampleRun, Sandbox, SandboxSpec, SiloSpec,
};
use testkit::webhook_receiver::WebhookReceiver;

const UNITS: [&str; 3] = ["dsl", "fiber", "voice"];
/// The board rejects a candidate that loses more than this much held-out AUC at any unit.
const BOARD_MAX_DROP: f64 = 0.01;

/// The board's review of `version` against the current one: approve, and why.
fn review(versions: &[Value], version: u64, current: u64) -> anyhow::Result<(bool, String)> {
    let find = |v: u64| {
        versions
            .iter()
            .find(|m| m["version"] == v)
            .with_context(|| format!("v{v} is not in GET /v1/versions"))
    };
    let (cand, cur) = (find(version)?, find(current)?);
    let aggregation = cand["aggregation"].as_str().unwrap_or_default();
    ensure!(
        aggregation.contains("under secure aggregation"),
        "v{version} was not made by secure aggregation: {aggregation}"
    );
    let mut worst: Option<(String, f64)> = None;
    for unit in UNITS {
        let drop = cur["validation"][unit]["auc"].as_f64().unwrap_or(0.0)
            - cand["validation"][unit]["auc"].as_f64().unwrap_or(0.0);
        if worst.as_ref().is_none_or(|(_, d)| drop > *d) {
            worst = Some((unit.to_string(), drop));
        }
    }
    let (unit, drop) = worst.unwrap_or_default();
    let (a, b) = (
        weighted_score(&cur["validation"]).unwrap_or(f64::NAN),
        weighted_score(&cand["validation"]).unwrap_or(f64::NAN),
    );
    if cur["validation"].as_object().is_none_or(|v| v.is_empty()) {
        return Ok((true, format!("first candidate: AUC {b:.3}")));
    }
    Ok(if drop > BOARD_MAX_DROP {
        (
            false,
            format!("AUC at {unit} falls by {drop:.3} (board limit {BOARD_MAX_DROP})"),
        )
    } else {
        (
            true,
            format!("AUC {a:.3} → {b:.3}; no unit loses more than {BOARD_MAX_DROP}"),
        )
    })
}

fn main() -> anyhow::Result<()> {
    let ExampleRun {
        here,
        rounds,
        work,
        bins,
    } = ExampleRun::prepare("business_units", 10)?;

    // The board's token (shown once, kept only as a digest by the coordinator) and the
    // webhook's shared secret.
    let token = tokens::add(
        &work.join("admin-tokens.toml"),
        "change-board",
        Scope::Approve,
    )?;
    let secret: String = rand::random::<[u8; 24]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(work.join("webhook.secret"), &secret)?;
    let receiver = WebhookReceiver::start(0)?;
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut fed: toml::Table = toml::from_str(&adapt_federation_file(
        &here.join("federation.toml"),
        rounds,
    )?)?;
    fed.insert(
        "admin".into(),
        toml::toml! { listen = (format!("127.0.0.1:{admin_port}")) tokens = (work.join("admin-tokens.toml").display().to_string()) }.into(),
    );
    if let Some(hook) = fed
        .get_mut("webhooks")
        .and_then(|w| w.as_array_mut())
        .and_then(|w| w.first_mut())
        .and_then(|w| w.as_table_mut())
    {
        hook.insert(
            "url".into(),
            format!("http://127.0.0.1:{}/fedsilo", receiver.port).into(),
        );
        hook.insert(
            "secret_file".into(),
            work.join("webhook.secret").display().to_string().into(),
        );
    }
    let data: Vec<_> = UNITS
        .iter()
        .map(|u| here.join(format!("data/{u}.csv")))
        .collect();
    add_pooled_reference(&bins, &mut fed, &data, &work)?;
    let silos = UNITS
        .iter()
        .map(|u| SiloSpec {
            name: u.to_string(),
            data: here.join(format!("data/{u}.csv")),
            ..Default::default()
        })
        .collect();
    println!("business units: {} units, {rounds} rounds, secure aggregation with distributed DP, every candidate approved through the admin API", UNITS.len());
    let mut sb = Sandbox::start_spec(SandboxSpec {
        bins: &bins,
        dir: &work,
        federation_toml: &toml::to_string(&fed)?,
        policy_toml: &std::fs::read_to_string(here.join("policy.toml"))?,
        schema: &here.join("schema.toml"),
        silos,
        silo_args: &["--once"],
        aggregators: vec![],
        coordinator_args: vec![],
    })?;

    let rt = tokio::runtime::Runtime::new()?;
    fedsilo::tls::install_crypto_provider();
    let api = AdminClient::with_token(
        &format!("https://127.0.0.1:{admin_port}"),
        &work.join("certs/ca.pem"),
        Some(token),
        "coordinator",
    )?;
    let get = |path: &str| -> anyhow::Result<Value> {
        let r = rt.block_on(api.get(path))?;
        ensure!(r.status == 200, "GET {path}: {} {}", r.status, r.text());
        Ok(r.json())
    };
    let mut decisions: BTreeMap<u64, bool> = BTreeMap::new();
    let mut epsilon = None;
    let mut gate = 0;
    println!("{:>7}  {:>8}  board", "version", "decision");
    loop {
        let notice = receiver
            .arrivals
            .recv_timeout(Duration::from_secs(300))
            .context("no webhook notice for 5 minutes")?;
        ensure!(
            notice.signed_with(secret.as_bytes()),
            "a notice with a bad signature"
        );
        let body = notice.json();
        match body["kind"].as_str().unwrap_or_default() {
            "candidate_awaiting_approval" => {
                let version = body["data"]["version"].as_u64().context("no version")?;
                let status = get("/v1/status")?;
                let current = status["current_version"].as_u64().unwrap_or(0);
                let versions = get("/v1/versions")?;
                let list = versions["versions"].as_array().cloned().unwrap_or_default();
                let (approve, why) = review(&list, version, current)?;
                if let Some(p) = list.iter().find(|m| m["version"] == version) {
                    epsilon = p["privacy"]["epsilon"].as_f64().or(epsilon);
                }
                let verb = if approve { "approve" } else { "reject" };
                let r = rt.block_on(api.post(
                    &format!("/v1/candidates/{version}/{verb}"),
                    &json!({ "reason": why }),
                ))?;
                ensure!(
                    r.status == 200,
                    "{verb} v{version}: {} {}",
                    r.status,
                    r.text()
                );
                println!("{version:>7}  {verb:>8}  {why}");
                decisions.insert(version, approve);
            }
            "round_rejected" => {
                let reason = body["data"]["reason"].as_str().unwrap_or_default();
                if !reason.starts_with("rejected by") {
                    gate += 1;
                    println!(
                        "{:>7}  {:>8}  (never reached the board: {reason})",
                        body["data"]["version"]
                            .as_u64()
                            .map_or("-".into(), |v| v.to_string()),
                        "gate"
                    );
                }
            }
            "budget_nearly_spent" => println!("  (privacy budget nearly spent: {})", body["data"]),
            "federation_finished" => break,
            _ => {}
        }
    }
    let finished = sb.expect("finished", |e| e["event"] == "finished")?;
    ensure!(
        finished["error"].is_null(),
        "the federation stopped: {}",
        finished["error"]
    );
    // It writes the run report on its way out.
    let exit = sb.coordinator().wait_exit(Duration::from_secs(60))?;
    ensure!(exit.success(), "the coordinator exited with {exit}");
    ensure!(
        (decisions.len() + gate) as u64 == rounds,
        "{} candidates decided and {gate} stopped by the gate, {rounds} rounds run",
        decisions.len()
    );
    // Every decision is in the event log (and the audit journal) under the token's name.
    let approved = sb
        .seen()
        .iter()
        .filter(|e| e["event"] == "approved" && e["by"] == "token change-board")
        .count();
    let rejected = sb
        .seen()
        .iter()
        .filter(|e| {
            e["event"] == "round_rejected"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("rejected by token change-board"))
        })
        .count();
    ensure!(
        approved == decisions.values().filter(|a| **a).count()
            && rejected == decisions.values().filter(|a| !**a).count(),
        "approved {approved}, rejected {rejected}; decided {decisions:?}"
    );
    let audit = std::fs::read_to_string(sb.state_dir().join("audit.jsonl"))?;
    ensure!(
        audit.matches("token change-board").count() >= decisions.len(),
        "the audit journal does not name the board for every decision"
    );
    let Some(epsilon) = epsilon else {
        bail!("no privacy spend recorded with the candidates");
    };
    println!(
        "\n{approved} candidate(s) approved and {rejected} rejected through the admin API; ε spent {epsilon:.2} of 40"
    );
    ensure!(epsilon <= 40.0, "ε {epsilon} over the budget");
    sb.print_comparison("unit");
    println!(
        "\nbusiness units: every check passed (state and run report in {})",
        work.join("state").display()
    );
    Ok(())
}
