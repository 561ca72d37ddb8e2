//! The audit journal of a real federation: it verifies against the consortium CA, and every
//! kind of tampering — an edited, deleted or moved entry, an entry cut off the end, a modified,
//! deleted or added checkpoint, a rewritten CURRENT — is caught by `fedsilo audit verify`, which
//! names what is wrong.

use std::path::{Path, PathBuf};

use crate::common::{arg, fedsilo, Federation, Options};

/// Runs `fedsilo audit verify` on `state` against `ca`.
fn verify(state: &Path, ca: &Path) -> (bool, String) {
    fedsilo(&[
        "audit",
        "verify",
        "--state-dir",
        arg(state),
        "--ca",
        arg(ca),
    ])
}

/// A copy of the state directory to tamper with.
fn copy(state: &Path, to: &Path) -> PathBuf {
    let dst = to.join("state");
    std::fs::create_dir_all(dst.join("models")).unwrap();
    for f in ["audit.jsonl", "CURRENT"] {
        std::fs::copy(state.join(f), dst.join(f)).unwrap();
    }
    for e in std::fs::read_dir(state.join("models")).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), dst.join("models").join(e.file_name())).unwrap();
        }
    }
    dst
}

fn lines(state: &Path) -> Vec<String> {
    std::fs::read_to_string(state.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write_lines(state: &Path, ls: &[String]) {
    std::fs::write(state.join("audit.jsonl"), ls.join("\n") + "\n").unwrap();
}

#[test]
fn the_journal_of_a_real_run_verifies_and_every_tampering_is_named() {
    let rounds = 3;
    let mut f = Federation::start(Options {
        rounds,
        ..Default::default()
    });
    let fin = f.expect("finished", |e| e["event"] == "finished");
    assert!(fin["error"].is_null(), "{fin}");
    assert!(f.exit_status().success());
    let state = f.state_dir();
    let ca = f.dir.path().join("certs/coordinator/ca.pem");

    let (ok, out) = verify(&state, &ca);
    assert!(ok, "{out}");
    assert!(
        out.contains("OK") && out.contains(&format!("{} committed", rounds + 1)),
        "{out}"
    );
    let original = lines(&state);
    let find = |kind: &str| {
        original
            .iter()
            .position(|l| l.contains(&format!("\"kind\":\"{kind}\"")))
            .unwrap()
    };
    let admitted = find("update_admitted");

    type Tamper = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Tamper, Vec<String>)> = vec![
        (
            "an edited entry",
            Box::new(move |s: &Path| {
                let mut ls = lines(s);
                ls[admitted] = ls[admitted].replace("\"examples\":", "\"examples\":1");
                write_lines(s, &ls);
            }),
            vec![format!("audit.jsonl:{}", admitted + 1), "edited".into()],
        ),
        (
            "a deleted entry",
            Box::new(move |s: &Path| {
                let mut ls = lines(s);
                ls.remove(admitted);
                write_lines(s, &ls);
            }),
            vec![format!("audit.jsonl:{}", admitted + 1), "deleted".into()],
        ),
        (
            "two entries swapped",
            Box::new(move |s: &Path| {
                let mut ls = lines(s);
                ls.swap(admitted, admitted + 1);
                write_lines(s, &ls);
            }),
            vec![format!("audit.jsonl:{}", admitted + 1), "reordered".into()],
        ),
        (
            "the last commit cut off the journal",
            Box::new(|s: &Path| {
                let mut ls = lines(s);
                while !ls.last().unwrap().contains("\"kind\":\"committed\"") {
                    ls.pop();
                }
                ls.pop();
                write_lines(s, &ls);
            }),
            vec![
                format!("models/v{rounds}.safetensors"),
                "no `committed` entry".into(),
            ],
        ),
        (
            "a modified checkpoint",
            Box::new(|s: &Path| {
                let p = s.join("models/v2.safetensors");
                let mut b = std::fs::read(&p).unwrap();
                let last = b.len() - 1;
                b[last] ^= 1;
                std::fs::write(&p, b).unwrap();
            }),
            vec!["models/v2.safetensors".into(), "SHA-256".into()],
        ),
        (
            "a deleted checkpoint",
            Box::new(|s: &Path| std::fs::remove_file(s.join("models/v1.safetensors")).unwrap()),
            vec!["models/v1.safetensors".into(), "deleted".into()],
        ),
        (
            "an added checkpoint",
            Box::new(|s: &Path| {
                std::fs::copy(
                    s.join("models/v1.safetensors"),
                    s.join("models/v9.safetensors"),
                )
                .unwrap();
            }),
            vec!["models/v9.safetensors".into(), "added".into()],
        ),
        (
            "a rewritten CURRENT",
            Box::new(|s: &Path| std::fs::write(s.join("CURRENT"), "1\n").unwrap()),
            vec!["CURRENT".into(), "names version 1".into()],
        ),
        (
            // The journal ends with the last commit: one step back looks like the crash window
            // between the journal and CURRENT, but the committed file is already in models/.
            "CURRENT moved back one version",
            Box::new(move |s: &Path| {
                let mut ls = lines(s);
                while !ls.last().unwrap().contains("\"kind\":\"committed\"") {
                    ls.pop();
                }
                write_lines(s, &ls);
                std::fs::write(s.join("CURRENT"), format!("{}\n", rounds - 1)).unwrap()
            }),
            vec![
                "CURRENT".into(),
                format!("names version {}", rounds - 1),
                format!("made {rounds} current last"),
            ],
        ),
    ];
    for (what, tamper, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let s = copy(&state, tmp.path());
        assert!(verify(&s, &ca).0, "the copy itself verifies");
        tamper(&s);
        let (ok, out) = verify(&s, &ca);
        assert!(!ok, "{what}: not caught: {out}");
        for w in &want {
            assert!(out.contains(w.as_str()), "{what}: {out:?} lacks {w:?}");
        }
    }
    // Another consortium's CA does not vouch for this journal's signer.
    let other = tempfile::tempdir().unwrap();
    let (made, out) = fedsilo(&[
        "certs",
        "init",
        "--out",
        arg(other.path()),
        "--coordinator",
        "coordinator",
    ]);
    assert!(made, "{out}");
    let (ok, out) = verify(&state, &other.path().join("coordinator/ca.pem"));
    assert!(
        !ok && out.contains("audit.jsonl:1") && out.contains("consortium CA"),
        "{out}"
    );
}
