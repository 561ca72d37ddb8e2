//! The importable n8n workflow of `examples/n8n`, against a real coordinator: the file's
//! nodes are wired as its README draws them, and every HTTP request it makes — rendered from
//! the file, method, URL, headers and body — does what it should: read the figures, approve
//! and deploy one candidate (the silos then hold it), reject the next.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::common::{admin_token as token, deploy_dir, example_in, free_port, Federation, Options};
use fedsilo::http_client::{roots, HttpClient};
use hyper::Method;
use testkit::webhook_receiver::WebhookReceiver;

const SECRET: &str = "an-n8n-webhook-secret-of-some-length";

fn workflow() -> Value {
    let path = example_in("n8n", "approval-workflow.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn node<'a>(wf: &'a Value, name: &str) -> &'a Value {
    wf["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// The names each output of `from` leads to.
fn next(wf: &Value, from: &str) -> Vec<Vec<String>> {
    wf["connections"][from]["main"]
        .as_array()
        .map(|outs| {
            outs.iter()
                .map(|o| {
                    o.as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c["node"].as_str().unwrap().to_string())
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Renders an n8n parameter: an expression (`=` first) whose `{{ … }}` are `$env.NAME` or
/// `$('Decision').item.json.NAME` — the only forms the workflow's requests use, so anything
/// else fails the test rather than going unchecked.
fn render(text: &str, env: &BTreeMap<&str, String>, decision: &Value) -> String {
    let Some(expr) = text.strip_prefix('=') else {
        return text.to_string();
    };
    let mut out = String::new();
    let mut rest = expr;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("unclosed {{") + start;
        let inner = rest[start + 2..end].trim();
        let value = if let Some(name) = inner.strip_prefix("$env.") {
            env.get(name)
                .unwrap_or_else(|| panic!("$env.{name} is not documented"))
                .clone()
        } else if let Some(field) = inner.strip_prefix("$('Decision').item.json.") {
            match &decision[field] {
                Value::String(s) => s.clone(),
                Value::Null => panic!("the Decision node has no `{field}`"),
                v => v.to_string(),
            }
        } else {
            panic!("an expression the test does not know: {inner}")
        };
        out.push_str(&value);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Sends the request of HTTP node `name`: its status and JSON answer.
fn send(
    rt: &tokio::runtime::Runtime,
    http: &HttpClient,
    wf: &Value,
    name: &str,
    env: &BTreeMap<&str, String>,
    decision: &Value,
) -> (u16, Value) {
    let n = node(wf, name);
    assert_eq!(n["type"], "n8n-nodes-base.httpRequest", "{name}");
    let p = &n["parameters"];
    let method = match p["method"].as_str().unwrap() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        m => panic!("{name}: method {m}"),
    };
    let url = render(p["url"].as_str().unwrap(), env, decision);
    let headers: Vec<(String, String)> = p["headerParameters"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_lowercase(),
                render(h["value"].as_str().unwrap(), env, decision),
            )
        })
        .collect();
    let mut headers: Vec<(&str, String)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let body = match p["jsonBody"].as_str() {
        Some(b) => {
            assert_eq!(p["specifyBody"], "json", "{name}");
            headers.push(("content-type", "application/json".into()));
            let body = render(b, env, decision);
            serde_json::from_str::<Value>(&body).unwrap_or_else(|e| panic!("{name}: {body}: {e}"));
            body.into_bytes()
        }
        None => vec![],
    };
    let r = rt
        .block_on(http.send(method, &url, &headers, body))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (r.status, r.json())
}

/// The Decision node's output for `version`, as its code makes it.
fn decision(version: u64, answer: &str, reason: &str) -> Value {
    json!({
        "version": version,
        "decision": answer,
        "reason": reason,
        "decision_body": json!({ "reason": reason }).to_string(),
        "deploy_body": json!({ "version": version, "reason": reason }).to_string(),
    })
}

#[test]
fn the_n8n_workflow_reviews_approves_deploys_and_rejects_through_the_api() {
    fedsilo::tls::install_crypto_provider();
    let wf = workflow();
    // Wired as drawn: trigger → verify → figures → review → decision → approved? → …
    let chain = [
        "fedsilo notice",
        "Verify signature",
        "Candidate figures",
        "Human review",
        "Decision",
        "Approved?",
    ];
    for pair in chain.windows(2) {
        assert_eq!(next(&wf, pair[0]), [[pair[1].to_string()]], "{}", pair[0]);
    }
    assert_eq!(
        next(&wf, "Approved?"),
        [["Approve".to_string()], ["Reject".to_string()]]
    );
    assert_eq!(next(&wf, "Approve"), [["Deploy".to_string()]]);
    assert_eq!(
        node(&wf, "fedsilo notice")["type"],
        "n8n-nodes-base.webhook"
    );
    assert_eq!(
        node(&wf, "fedsilo notice")["parameters"]["options"]["rawBody"],
        true
    );
    assert_eq!(node(&wf, "Human review")["type"], "n8n-nodes-base.wait");
    let verify = node(&wf, "Verify signature")["parameters"]["jsCode"]
        .as_str()
        .unwrap();
    for needed in [
        "x-fedsilo-signature",
        "x-fedsilo-timestamp",
        "timingSafeEqual",
    ] {
        assert!(
            verify.contains(needed),
            "the signature check lacks {needed}"
        );
    }

    let keys = tempfile::tempdir().unwrap();
    let tokens = keys.path().join("tokens.toml");
    let secret = keys.path().join("webhook.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let receiver = WebhookReceiver::start(0).unwrap();
    let admin = free_port();
    let env: BTreeMap<&str, String> = [
        ("FEDSILO_URL", format!("https://127.0.0.1:{admin}")),
        ("FEDSILO_READ_TOKEN", token(&tokens, "n8n-read", "read")),
        (
            "FEDSILO_APPROVE_TOKEN",
            token(&tokens, "n8n-approve", "approve"),
        ),
        (
            "FEDSILO_OPERATE_TOKEN",
            token(&tokens, "n8n-deploy", "operate"),
        ),
    ]
    .into_iter()
    .collect();
    // Every variable the file reads is one the README documents.
    let readme = std::fs::read_to_string(example_in("n8n", "README.md")).unwrap();
    for (name, _) in env.iter() {
        assert!(readme.contains(name), "README lacks {name}");
    }
    let deployed = keys.path().join("deployed");
    let deploy = |name: &str| deploy_dir(&deployed, name);
    let extra = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ntokens = \"{}\"\n\n[[webhooks]]\nurl = \"http://127.0.0.1:{}/webhook/fedsilo\"\nsecret_file = \"{}\"\nevents = [\"candidate_awaiting_approval\"]\nfirst_retry_secs = 0.05\n",
        tokens.display(),
        receiver.port,
        secret.display()
    );
    let mut f = Federation::start(Options {
        rounds: 3,
        silos: vec![("northeast", deploy("northeast")), ("west", deploy("west"))],
        min_silos: 2,
        quorum: 2,
        silos_exit_with_coordinator: false,
        coordinator_args: vec!["--serve".into()],
        policy_extra: "[validation]\nrequire_approval = true\n".into(),
        extra: Box::leak(extra.into_boxed_str()),
        ..Default::default()
    });
    let certs = f.operator("alice");
    let http = HttpClient::with_roots(
        roots(false, Some(&certs.join("ca.pem"))).unwrap(),
        std::time::Duration::from_secs(30),
    )
    .server_name(Some("coordinator".into()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let notice = |expect: u64| {
        let r = receiver
            .arrivals
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("no notice reached the workflow's webhook");
        assert!(r.signed_with(SECRET.as_bytes()), "unsigned notice");
        let body = r.json();
        assert_eq!(body["kind"], "candidate_awaiting_approval", "{body}");
        assert_eq!(body["data"]["version"], expect, "{body}");
        body["data"]["version"].as_u64().unwrap()
    };

    // v1: figures read, approved by the reviewer, deployed to every silo.
    let v1 = notice(1);
    let none = Value::Null;
    let (s, versions) = send(&rt, &http, &wf, "Candidate figures", &env, &none);
    assert_eq!(s, 200, "{versions}");
    assert!(
        versions.to_string().contains("awaiting-approval"),
        "{versions}"
    );
    let yes = decision(v1, "approve", "figures reviewed: CHG-7");
    let (s, body) = send(&rt, &http, &wf, "Approve", &env, &yes);
    assert_eq!(s, 200, "{body}");
    let (s, body) = send(&rt, &http, &wf, "Deploy", &env, &yes);
    assert_eq!(s, 202, "{body}");
    for silo in ["northeast", "west"] {
        f.since(0, "deployed", |e| {
            e["event"] == "silo_deployed" && e["silo"] == silo && e["version"] == v1
        });
    }
    // v2: rejected by the reviewer.
    let v2 = notice(2);
    let no = decision(v2, "reject", "the west's AUC dropped");
    let (s, body) = send(&rt, &http, &wf, "Reject", &env, &no);
    assert_eq!(s, 200, "{body}");
    let journal = std::fs::read_to_string(f.state_dir().join("audit.jsonl")).unwrap();
    assert!(
        journal.contains("figures reviewed: CHG-7"),
        "the approval's reason"
    );
    assert!(
        journal.contains("the west's AUC dropped"),
        "the rejection's reason"
    );
    assert!(
        journal.contains("token n8n-deploy"),
        "the deployment's caller"
    );
    f.coordinator().signal("TERM").unwrap();
    f.exit_status();
}
