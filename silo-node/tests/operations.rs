//! End-to-end tests of operating a federation: Prometheus metrics on the coordinator and on a
//! silo node, scraped while the federation runs.

mod common;

use std::io::{Read, Write};

use common::{free_port, Federation, Options};

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
    let (coord, silo) = (free_port(), free_port());
    let mut f = Federation::start(Options {
        rounds: 4,
        coordinator_args: vec!["--metrics-listen".into(), format!("127.0.0.1:{coord}")],
        silos: vec![
            (
                "northeast",
                vec!["--metrics-listen".into(), format!("127.0.0.1:{silo}")],
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
