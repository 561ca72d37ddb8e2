//! End-to-end tests of operating a federation: Prometheus metrics on the coordinator and on a
//! silo node, scraped while the federation runs; what a silo's log says.

use std::io::{Read, Write};

use serde_json::Value;

use crate::common::{free_port, Federation, Options};

/// `GET /metrics` over plain HTTP/1.0: the body.
fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    out
}

/// The value of the sample `name` (with its labels) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

#[test]
fn the_coordinator_and_a_silo_serve_prometheus_metrics() {
    // The silo binds any free port (port 0) and says which in its log.
    let coord = free_port();
    let mut f = Federation::start(Options {
        rounds: 4,
        coordinator_args: vec!["--metrics-listen".into(), format!("127.0.0.1:{coord}")],
        silos: vec![
            (
                "northeast",
                vec!["--metrics-listen".into(), "127.0.0.1:0".into()],
            ),
            // Slow rounds, so that the federation is still running when it is scraped.
            ("midwest", vec!["--train-delay-ms".into(), "400".into()]),
            ("west", vec![]),
        ],
        ..Default::default()
    });
    // Scraped while the federation runs (it exits after its last round).
    f.expect("round 2 committed", |e| {
        e["event"] == "round_committed" && e["round"] == 2
    });
    let text = scrape(coord);
    let committed = sample(&text, "fedsilo_rounds_total{outcome=\"committed\"}").unwrap();
    assert!(committed >= 2.0, "{text}");
    assert!(
        sample(&text, "fedsilo_current_version").unwrap() >= 2.0,
        "{text}"
    );
    assert!(
        sample(&text, "fedsilo_round_participants_count").unwrap() >= 2.0,
        "{text}"
    );
    assert!(
        sample(&text, "fedsilo_round_seconds_count{phase=\"total\"}").unwrap() >= 2.0,
        "{text}"
    );
    assert!(
        sample(&text, "fedsilo_bytes_from_silos_total").unwrap() > 0.0,
        "{text}"
    );
    assert!(
        sample(&text, "fedsilo_session_bytes_received").unwrap() > 0.0,
        "{text}"
    );
    let log = f.silo_log("northeast");
    let silo: u16 = log
        .split("metrics at http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the silo names its metrics address: {log}"));
    let text = scrape(silo);
    assert!(
        sample(&text, "fedsilo_silo_requests_total{kind=\"train\"}").unwrap() >= 2.0,
        "{text}"
    );
    assert!(
        sample(&text, "fedsilo_silo_train_seconds_count").unwrap() >= 2.0,
        "{text}"
    );
    assert!(
        sample(&text, "fedsilo_session_bytes_sent").unwrap() > 0.0,
        "{text}"
    );
    let fin = f.expect("finished", |e| e["event"] == "finished");
    assert!(fin["error"].is_null(), "{fin}");
}

#[test]
fn the_run_report_renders_every_chart_in_a_headless_browser() {
    // Differential privacy, a silo whose updates are refused (NaN) and one that is late
    // sometimes: every chart has something to draw.
    let mut f = Federation::start(Options {
        rounds: 4,
        min_silos: 4,
        quorum: 3,
        policy_extra: "[privacy]\nmode = \"central\"\nclip_norm = 0.3\nnoise_multiplier = 1.0\nbudget = { epsilon = 50.0, delta = 1e-5 }\n".into(),
        silos: vec![
            ("northeast", vec![]),
            ("midwest", vec![]),
            ("west", vec![]),
            ("south", vec!["--attack".into(), "nan".into()]),
        ],
        ..Default::default()
    });
    let done = f.expect("finished", |e| e["event"] == "finished");
    assert_eq!(done["rounds_committed"], 4, "{done}");
    assert!(f.exit_status().success());
    // Written at the end of the run, and on demand.
    let state = f.state_dir();
    assert!(state.join("report.html").exists());
    let out = f.dir.path().join("on-demand.html");
    let (ok, said) = crate::common::fedsilo(&[
        "report",
        "--state-dir",
        crate::common::arg(&state),
        "--out",
        crate::common::arg(&out),
    ]);
    assert!(ok, "{said}");
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(
        page.contains("non-finite") || page.contains("NaN"),
        "the refusals table"
    );

    let attr = crate::common::laid_out(&out);
    assert_eq!(attr("data-charts-total").as_deref(), Some("7"));
    assert_eq!(
        attr("data-charts-rendered").as_deref(),
        Some("7"),
        "every chart laid out with drawn marks"
    );
    assert_eq!(attr("data-charts-empty").as_deref(), Some("0"));

    // The governance report, written as the coordinator stopped: each silo's privacy spend
    // against its budget, the refused silo's refusals, in JSON and on a page Chromium lays out
    // with a row for everything the JSON holds.
    let g: Value =
        serde_json::from_slice(&std::fs::read(state.join("governance.json")).unwrap()).unwrap();
    assert!(g["journal"]["problem"].is_null(), "{}", g["journal"]);
    assert_eq!(g["journal"]["ca_checked"], true);
    let p = &g["privacy"];
    assert_eq!(
        (p["mode"].as_str(), p["budget_epsilon"].as_f64()),
        (Some("central"), Some(50.0))
    );
    for s in p["silos"].as_array().unwrap() {
        let (spent, left) = (s["spent"].as_f64().unwrap(), s["left"].as_f64().unwrap());
        assert!(spent > 0.0 && (spent + left - 50.0).abs() < 1e-9, "{s}");
    }
    let south = g["silos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["silo"] == "south")
        .unwrap();
    assert!(!south["refusals"].as_array().unwrap().is_empty(), "{south}");
    let page = state.join("governance.html");
    let attr = crate::common::laid_out(&page);
    assert_eq!(attr("data-json").as_deref(), Some("read"));
    assert_eq!(attr("data-mismatches").as_deref(), Some("none"));
    assert_eq!(attr("data-sections").as_deref(), Some("10"));
    let width = |k: &str| attr(k).and_then(|w| w.parse::<u64>().ok()).unwrap();
    assert!(
        width("data-page-width") <= width("data-window-width"),
        "nothing wider than the window"
    );
}

/// A silo says what it does at its default log level — one line per trained round — in plain
/// text when its log goes to a file (no colour codes), or as JSON lines with `--log-format
/// json`.
#[test]
fn a_silo_logs_each_round_in_plain_text_or_json() {
    let mut f = Federation::start(Options {
        rounds: 2,
        silos: vec![
            ("northeast", vec![]),
            ("west", vec!["--log-format".into(), "json".into()]),
        ],
        min_silos: 2,
        quorum: 2,
        ..Default::default()
    });
    f.finished_ok();
    f.exit_status();
    let text = f.silo_log("northeast");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file:\n{text}"
    );
    for round in [1, 2] {
        assert!(text.contains(&format!("trained round {round}")), "{text}");
    }
    let json = f.silo_log("west");
    let lines: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let trained: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("trained round"))
        })
        .collect();
    assert_eq!(trained.len(), 2, "{json}");
    assert_eq!(trained[0]["level"], "INFO");
    assert_eq!(trained[0]["fields"]["round"], 1);
    assert!(trained[0]["fields"]["examples"].as_u64() > Some(0));
}

/// The roster: a listed member that never links is reported missing (once), an unlisted one
/// that links is reported unexpected, and the admin API lists who is expected and present.
#[test]
fn a_missing_member_of_the_roster_is_reported_and_listed() {
    let admin = free_port();
    let extra = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[[members]]\nname = \"northeast\"\nregion = \"us\"\n\n[[members]]\nname = \"south\"\nregion = \"us\"\n"
    );
    let mut f = Federation::start(Options {
        rounds: 1,
        silos: vec![("northeast", vec![]), ("west", vec![])],
        min_silos: 2,
        quorum: 2,
        heartbeat_timeout: 2.0,
        silos_exit_with_coordinator: false,
        coordinator_args: vec!["--serve".into()],
        extra: Box::leak(extra.into_boxed_str()),
        ..Default::default()
    });
    let missing = f.expect("south is missing", |e| e["event"] == "member_missing");
    assert_eq!(missing["member"], "south", "{missing}");
    let stranger = f
        .seen()
        .iter()
        .find(|e| e["event"] == "unexpected_member")
        .cloned()
        .unwrap_or_else(|| f.expect("west is unexpected", |e| e["event"] == "unexpected_member"));
    assert_eq!(stranger["member"], "west", "{stranger}");
    let kit = f.operator("alice").join("alice");
    let url = format!("https://127.0.0.1:{admin}");
    let (ok, out) = crate::common::fedsilo(&[
        "admin",
        "--url",
        &url,
        "--kit",
        crate::common::arg(&kit),
        "silos",
    ]);
    assert!(ok, "{out}");
    let silos: Value = serde_json::from_str(&out).unwrap();
    let expected: Vec<(String, bool)> = silos["expected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["present"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        expected,
        [
            ("northeast".to_string(), true),
            ("south".to_string(), false)
        ]
    );
    f.coordinator().signal("TERM").unwrap();
    f.exit_status();
    let events = std::fs::read_to_string(f.state_dir().join("events.jsonl")).unwrap();
    let missing_events = events
        .lines()
        .filter(|l| l.contains("\"event\":\"member_missing\""))
        .count();
    assert_eq!(missing_events, 1, "reported more than once:\n{events}");
}
