//! The admin API and webhooks in a real federation: every endpoint with the right
//! credentials, the wrong ones and none; an approval workflow driven through the API; pause,
//! start-a-round and resume; signed webhook notices that survive a failing receiver; a dead
//! receiver that does not hold up a single round.

use std::net::TcpListener;
use std::path::Path;

use crate::common::{arg, fedsilo, free_port, Federation, Options};
use fedsilo::admin::AdminClient;
use fedsilo::tls::NodeCredentials;
use serde_json::{json, Value};
use testkit::webhook_receiver::WebhookReceiver;

const SECRET: &str = "a-webhook-secret-of-some-length";

/// A receiver that accepts connections and never answers.
fn dead_receiver() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = vec![];
        for s in l.incoming() {
            held.push(s);
        }
    });
    port
}

use crate::common::admin_token as token;

struct Callers {
    url: String,
    ca: std::path::PathBuf,
    reader: String,
    approver: String,
    operator_token: String,
}

impl Callers {
    fn token(&self, t: Option<&str>) -> AdminClient {
        AdminClient::with_token(&self.url, &self.ca, t.map(str::to_string), "coordinator").unwrap()
    }
    fn kit(&self, kit: &Path) -> AdminClient {
        let creds = NodeCredentials::load_kit(kit).unwrap();
        AdminClient::with_kit(&self.url, &creds, "coordinator").unwrap()
    }
}

/// Status code and JSON of `method path` by `client`.
fn call(rt: &tokio::runtime::Runtime, c: &AdminClient, method: &str, path: &str) -> (u16, Value) {
    let r = rt
        .block_on(async {
            if method == "GET" {
                c.get(path).await
            } else {
                c.post(path, &json!({ "reason": "test" })).await
            }
        })
        .unwrap();
    (r.status, r.json())
}

#[test]
fn every_endpoint_checks_its_caller_and_an_approval_workflow_runs_through_the_api() {
    fedsilo::tls::install_crypto_provider();
    let keys = tempfile::tempdir().unwrap();
    let tokens = keys.path().join("tokens.toml");
    let reader = token(&tokens, "dashboard", "read");
    let approver = token(&tokens, "n8n", "approve");
    let operator_token = token(&tokens, "oncall", "operate");
    let secret = keys.path().join("webhook.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let receiver = WebhookReceiver::start(2).unwrap();
    let (hook, received) = (receiver.port, receiver.requests.clone());
    let admin = free_port();
    let extra = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ntokens = \"{}\"\n\n[[webhooks]]\nurl = \"http://127.0.0.1:{hook}/fedsilo?key=x\"\nsecret_file = \"{}\"\nevents = [\"candidate_awaiting_approval\", \"version_committed\", \"federation_paused\"]\nfirst_retry_secs = 0.05\ntimeout_secs = 5\n",
        tokens.display(),
        secret.display()
    );
    let mut f = Federation::start(Options {
        rounds: 3,
        policy_extra: "[validation]\nrequire_approval = true\n".into(),
        extra: Box::leak(extra.into_boxed_str()),
        ..Default::default()
    });
    let certs = f.operator("alice");
    let who = Callers {
        url: format!("https://127.0.0.1:{admin}"),
        ca: certs.join("ca.pem"),
        reader,
        approver,
        operator_token,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let alice = who.kit(&certs.join("alice"));
    let silo = who.kit(&certs.join("northeast"));
    let none = who.token(None);
    let read = who.token(Some(&who.reader));
    let approve = who.token(Some(&who.approver));
    let operate = who.token(Some(&who.operator_token));

    f.expect("v1 awaits", |e| e["event"] == "awaiting_approval");

    // Read endpoints: a read token and an operator certificate may; a silo's certificate and
    // no credentials may not; a revoked-looking token is unknown.
    for path in [
        "/v1/status",
        "/v1/silos",
        "/v1/rounds",
        "/v1/versions",
        "/v1/audit?limit=5",
        "/metrics",
    ] {
        for c in [&read, &alice] {
            let (s, body) = call(&rt, c, "GET", path);
            assert_eq!(s, 200, "{path}: {body}");
        }
        let (s, body) = call(&rt, &silo, "GET", path);
        assert_eq!(s, 403, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("role silo"),
            "{body}"
        );
        let (s, body) = call(&rt, &none, "GET", path);
        assert_eq!(s, 401, "{path}: {body}");
        let (s, _) = call(&rt, &who.token(Some("fedsilo_not-a-token")), "GET", path);
        assert_eq!(s, 401, "{path}");
    }
    let (_, status) = call(&rt, &read, "GET", "/v1/status");
    assert_eq!(status["state"], "awaiting_approval", "{status}");
    assert_eq!(status["awaiting_approval"]["version"], 1, "{status}");
    assert_eq!(status["silos"].as_array().unwrap().len(), 3, "{status}");
    assert!(status["silos"][0]["healthy"].as_bool().unwrap(), "{status}");
    let (_, rounds) = call(&rt, &read, "GET", "/v1/rounds");
    assert_eq!(
        rounds["rounds"][0]["event"], "awaiting_approval",
        "{rounds}"
    );
    let (_, versions) = call(&rt, &read, "GET", "/v1/versions");
    assert!(
        versions["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["version"] == 1 && v["status"] == "awaiting-approval"),
        "{versions}"
    );
    // The metrics, for a scraper on another host: the Prometheus text a read token may see.
    let scraped = rt.block_on(read.get("/metrics")).unwrap();
    assert!(
        scraped.text().contains("fedsilo_current_version") && scraped.text().ends_with("# EOF\n"),
        "{}",
        scraped.text()
    );
    let (_, audit) = call(&rt, &read, "GET", "/v1/audit?limit=3");
    assert_eq!(audit["entries"].as_array().unwrap().len(), 3, "{audit}");
    let (s, _) = call(&rt, &none, "GET", "/openapi.json");
    assert_eq!(s, 200, "the description is public");

    // Operate endpoints, while v1 awaits: the approve scope is not enough; none is nothing.
    for path in ["/v1/pause", "/v1/resume", "/v1/rounds"] {
        let (s, body) = call(&rt, &approve, "POST", path);
        assert_eq!(s, 403, "{path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("needs scope operate"),
            "{body}"
        );
        let (s, _) = call(&rt, &none, "POST", path);
        assert_eq!(s, 401, "{path}");
        let (s, _) = call(&rt, &silo, "POST", path);
        assert_eq!(s, 403, "{path}");
    }
    // A token, when sent, decides: alice's certificate with a read token may not pause.
    let alice_reading = who
        .kit(&certs.join("alice"))
        .token(Some(who.reader.clone()));
    let (s, body) = call(&rt, &alice_reading, "POST", "/v1/pause");
    assert_eq!(s, 403, "{body}");
    // Malformed input is refused after authentication, as JSON.
    let (s, body) = call(&rt, &none, "GET", "/v1/rounds?limit=abc");
    assert_eq!(s, 401, "{body}");
    let (s, body) = call(&rt, &read, "GET", "/v1/rounds?limit=abc");
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("limit=abc"),
        "{body}"
    );
    let (s, body) = call(&rt, &approve, "POST", "/v1/candidates/v1/approve");
    assert_eq!(s, 400, "{body}");
    // Pause (operator certificate) before approving, so that no round starts after it.
    let (s, body) = call(&rt, &alice, "POST", "/v1/pause");
    assert_eq!(s, 200, "{body}");
    let (s, body) = call(&rt, &operate, "POST", "/v1/pause");
    assert_eq!(s, 409, "already paused: {body}");
    f.expect("paused", |e| {
        e["event"] == "federation_paused" && e["by"] == "alice"
    });

    // Approve endpoints: a read token may not; none may not; the approve token may.
    let (s, _) = call(&rt, &read, "POST", "/v1/candidates/1/approve");
    assert_eq!(s, 403);
    let (s, _) = call(&rt, &none, "POST", "/v1/candidates/1/reject");
    assert_eq!(s, 401);
    let (s, _) = call(&rt, &silo, "POST", "/v1/candidates/1/approve");
    assert_eq!(s, 403);
    let (s, body) = call(&rt, &approve, "POST", "/v1/candidates/7/approve");
    assert_eq!(s, 409, "v7 does not await: {body}");
    let (s, body) = call(&rt, &approve, "POST", "/v1/candidates/1/approve");
    assert_eq!(s, 200, "{body}");
    let a = f.expect("v1 approved", |e| e["event"] == "approved");
    assert_eq!(a["by"], "token n8n");
    // Paused: no round 2 until someone starts one.
    let (_, status) = call(&rt, &read, "GET", "/v1/status");
    assert_eq!(
        (status["state"].as_str(), status["current_version"].as_u64()),
        (Some("paused"), Some(1)),
        "{status}"
    );
    let (s, body) = call(&rt, &operate, "POST", "/v1/rounds");
    assert_eq!(s, 202, "{body}");
    f.expect("round 2 requested", |e| {
        e["event"] == "round_requested" && e["round"] == 2 && e["by"] == "token oncall"
    });
    f.expect("v2 awaits", |e| {
        e["event"] == "awaiting_approval" && e["version"] == 2
    });
    let (s, body) = call(&rt, &alice, "POST", "/v1/candidates/2/reject");
    assert_eq!(s, 200, "{body}");
    f.expect("v2 rejected", |e| {
        e["event"] == "round_rejected" && e["version"] == 2
    });
    // Roll back to v0 while paused: an operator's act (the approve scope is not enough).
    let (s, body) = call(&rt, &approve, "POST", "/v1/versions/0/rollback");
    assert_eq!(s, 403, "{body}");
    let (s, body) = call(&rt, &operate, "POST", "/v1/versions/0/rollback");
    assert_eq!(s, 200, "{body}");
    let r = f.expect("rolled back", |e| e["event"] == "rolled_back");
    assert_eq!(
        (r["from"].as_u64(), r["to"].as_u64(), r["by"].as_str()),
        (Some(1), Some(0), Some("token oncall"))
    );
    let (s, body) = call(&rt, &operate, "POST", "/v1/versions/0/rollback");
    assert_eq!(s, 409, "already current: {body}");
    let (s, body) = call(&rt, &operate, "POST", "/v1/resume");
    assert_eq!(s, 200, "{body}");
    let started = f.expect("round 3 starts", |e| e["event"] == "round_started");
    assert_eq!(
        started["base_version"], 0,
        "it trains from the version rolled back to"
    );
    f.expect("v3 awaits", |e| {
        e["event"] == "awaiting_approval" && e["version"] == 3
    });
    // A token revoked while the coordinator runs stops working at once.
    let (ok, out) = fedsilo(&[
        "admin",
        "token",
        "revoke",
        "--tokens",
        arg(&tokens),
        "--name",
        "dashboard",
    ]);
    assert!(ok, "{out}");
    let (s, body) = call(&rt, &read, "GET", "/v1/status");
    assert_eq!(s, 401, "{body}");

    let (s, _) = call(&rt, &alice, "POST", "/v1/candidates/3/approve");
    assert_eq!(s, 200);
    let done = f.expect("finished", |e| e["event"] == "finished");
    assert_eq!(done["version"], 3, "{done}");
    assert!(f.exit_status().success());

    // The journal names who did what.
    let (ok, out) = fedsilo(&["audit", "show", "--state-dir", arg(&f.state_dir())]);
    assert!(ok, "{out}");
    for said in [
        "rolled back from v1 to v0 by token oncall",
        "paused by alice",
        "resumed by token oncall",
        "approved by token n8n",
    ] {
        assert!(out.contains(said), "{said} not in the journal:\n{out}");
    }

    // Webhooks: the first two attempts failed (500) and were retried; every notice arrived
    // once accepted, signed, in order.
    let log = std::fs::read_to_string(f.state_dir().join("webhooks.jsonl")).unwrap();
    let outcomes: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        outcomes.iter().all(|o| o["outcome"] == "delivered"),
        "{log}"
    );
    assert_eq!(outcomes[0]["attempts"], 3, "{log}");
    assert!(
        !log.contains("key=x"),
        "the URL's query is not logged: {log}"
    );
    let got = received.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        outcomes.len() + 2,
        "two failed attempts, then one per notice"
    );
    assert_eq!(
        got[0].header("x-fedsilo-delivery"),
        got[2].header("x-fedsilo-delivery")
    );
    let kinds: Vec<String> = got[2..]
        .iter()
        .map(|r| {
            assert!(r.signed_with(SECRET.as_bytes()), "bad signature");
            assert!(!r.signed_with(b"another secret"));
            let body = r.json();
            assert_eq!(body["kind"], r.header("x-fedsilo-event"));
            body["kind"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "candidate_awaiting_approval",
            "federation_paused",
            "version_committed",
            "candidate_awaiting_approval",
            "candidate_awaiting_approval",
            "version_committed"
        ],
        "round_rejected and federation_resumed were not subscribed"
    );
}

#[test]
fn a_dead_webhook_receiver_does_not_hold_up_rounds() {
    let keys = tempfile::tempdir().unwrap();
    let secret = keys.path().join("webhook.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let dead = dead_receiver();
    // Each attempt waits 30 s for an answer that never comes: one notice alone would hold a
    // blocking sender for minutes.
    let extra = format!(
        "[[webhooks]]\nurl = \"http://127.0.0.1:{dead}/hook\"\nsecret_file = \"{}\"\ntimeout_secs = 30\nmax_attempts = 3\n",
        secret.display()
    );
    let mut f = Federation::start(Options {
        rounds: 4,
        extra: Box::leak(extra.into_boxed_str()),
        ..Default::default()
    });
    let done = f.expect("finished", |e| e["event"] == "finished");
    assert_eq!(done["rounds_committed"], 4, "{done}");
    assert!(f.exit_status().success());
    // Not one notice was delivered or given up on while the rounds ran: the first one was
    // still waiting for its first answer when the run ended. At shutdown every notice is
    // recorded, body and all, for a replay.
    let log = std::fs::read_to_string(f.state_dir().join("webhooks.jsonl")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["outcome"] == "abandoned_at_shutdown"),
        "{log}"
    );
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "version_committed",
            "version_committed",
            "version_committed",
            "version_committed",
            "federation_finished"
        ],
        "{log}"
    );
    let body: Value = serde_json::from_str(lines[3]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["data"]["version"], 4, "{body}");
}

#[test]
fn a_webhook_or_admin_typo_is_named_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let fed = dir.path().join("federation.toml");
    let base = std::fs::read_to_string(crate::common::example("federation.toml")).unwrap();
    let schema = crate::common::example("schema.toml");
    let base = base.replace("schema.toml", schema.to_str().unwrap());
    for (extra, expect) in [
        (
            "[[webhooks]]\nurl = \"ftp://x\"\nsecret_file = \"s\"\n",
            "webhooks[0] (ftp://x/…): url must start with http:// or https://",
        ),
        (
            "[[webhooks]]\nurl = \"http://x\"\nsecret_file = \"missing.secret\"\n",
            "secret_file",
        ),
        (
            "[[webhooks]]\nurl = \"http://x\"\nsecret_file = \"s\"\nevents = [\"version_comitted\"]\n",
            "version_comitted",
        ),
        ("[admin]\nlisten = \"127.0.0.1:0\"\ntokens = \"nope.toml\"\n", "nope.toml"),
    ] {
        std::fs::write(&fed, format!("{base}\n{extra}")).unwrap();
        let (ok, out) = fedsilo(&["coordinator", "--config", arg(&fed)]);
        assert!(!ok);
        assert!(out.contains(expect), "{extra}: {out}");
    }
}

#[test]
fn a_pause_survives_a_coordinator_crash_and_is_lifted_through_the_api() {
    fedsilo::tls::install_crypto_provider();
    let admin = free_port();
    let extra = format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n");
    let mut f = Federation::start(Options {
        rounds: 4,
        port: Some(free_port()),
        silos_exit_with_coordinator: false,
        // Rounds slow enough for the pause to come before the last one.
        silos: vec![
            ("northeast", vec![]),
            ("midwest", vec!["--train-delay-ms".into(), "500".into()]),
            ("west", vec![]),
        ],
        extra: Box::leak(extra.into_boxed_str()),
        ..Default::default()
    });
    let certs = f.operator("alice");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let alice = || {
        let creds = NodeCredentials::load_kit(&certs.join("alice")).unwrap();
        AdminClient::with_kit(&format!("https://127.0.0.1:{admin}"), &creds, "coordinator").unwrap()
    };
    f.expect("round 1", |e| {
        e["event"] == "round_committed" && e["round"] == 1
    });
    let (s, body) = call(&rt, &alice(), "POST", "/v1/pause");
    assert_eq!(s, 200, "{body}");
    f.expect("paused", |e| e["event"] == "federation_paused");
    f.coordinator().kill();
    // Restarted without an admin API, nothing could resume it: refused, saying so.
    let text = std::fs::read_to_string(f.dir.path().join("federation.toml")).unwrap();
    let without = f.dir.path().join("federation-without-admin.toml");
    let cut = text.find("[admin]").unwrap();
    std::fs::write(&without, &text[..cut]).unwrap();
    let (ok, out) = fedsilo(&["coordinator", "--config", arg(&without)]);
    assert!(!ok);
    assert!(
        out.contains("paused by alice") && out.contains("POST /v1/resume"),
        "{out}"
    );
    f.crash_and_restart_coordinator().unwrap();
    let p = f.expect("still paused after the crash", |e| {
        e["event"] == "federation_paused"
    });
    assert!(
        p["reason"]
            .as_str()
            .unwrap()
            .contains("paused before the coordinator restarted"),
        "{p}"
    );
    // The restarted coordinator bound its API before it started (a request waits in the
    // backlog until it serves), and it starts paused.
    let (s, status) = call(&rt, &alice(), "GET", "/v1/status");
    assert_eq!(
        (s, status["state"].as_str()),
        (200, Some("paused")),
        "{status}"
    );
    assert_eq!(status["paused"]["by"], "alice", "{status}");
    let (s, body) = call(&rt, &alice(), "POST", "/v1/resume");
    assert_eq!(s, 200, "{body}");
    let done = f.expect("finished", |e| e["event"] == "finished");
    assert!(done["error"].is_null(), "{done}");
    assert!(f.exit_status().success());
}
