//! `fedsilo aggregate` re-runs a combination offline and names the file and tensor on bad input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use fedsilo::kernels::Kernel;
use fedsilo::model::tensor_file::TensorSet;
use fedsilo::model::Digest;

fn layout() -> Vec<(String, Vec<usize>)> {
    vec![
        ("dense0.bias".into(), vec![3]),
        ("dense0.weight".into(), vec![2, 3]),
    ]
}

fn write(dir: &Path, name: &str, values: Vec<f32>, tensors: Vec<(String, Vec<usize>)>) -> PathBuf {
    let p = dir.join(name);
    let set = TensorSet {
        tensors,
        values: values.clone(),
    };
    set.write_like(&values, &p, HashMap::new()).unwrap();
    p
}

fn run(args: &[&str], files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fedsilo"))
        .arg("aggregate")
        .args(args)
        .args(files)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn recombines_like_the_library_and_prints_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let ups: Vec<Vec<f32>> = (0..5)
        .map(|i| {
            (0..9)
                .map(|j| (i * 9 + j) as f32 * if i == 4 { 100.0 } else { 0.1 })
                .collect()
        })
        .collect();
    let files: Vec<PathBuf> = ups
        .iter()
        .enumerate()
        .map(|(i, u)| {
            write(
                dir.path(),
                &format!("u{i}.safetensors"),
                u.clone(),
                layout(),
            )
        })
        .collect();
    let out = dir.path().join("agg.safetensors");
    let (ok, text) = run(
        &[
            "--kernel",
            "trimmed-mean",
            "--trim",
            "0.2",
            "--out",
            out.to_str().unwrap(),
        ],
        &files,
    );
    assert!(ok, "{text}");
    let got = TensorSet::read(&out).unwrap();
    assert_eq!(got.tensors, layout());
    let views: Vec<&[f32]> = ups.iter().map(|u| u.as_slice()).collect();
    let want = Kernel::TrimmedMean { trim: 0.2 }
        .combine(&views, &[1.0; 5])
        .unwrap()
        .values;
    assert_eq!(got.values, want);
    assert!(text.contains(&Digest::of_f32(&want).hex()), "{text}");

    let (ok, text) = run(
        &[
            "--kernel",
            "multi-krum",
            "--byzantine",
            "1",
            "--keep",
            "2",
            "--weights",
            "1,2,3,4,5",
            "--out",
            out.to_str().unwrap(),
        ],
        &files,
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("selected")
            && !text.contains("u4.safetensors, ")
            && !text.ends_with("u4.safetensors\n"),
        "{text}"
    );
}

#[test]
fn bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.safetensors", vec![1.0; 9], layout());
    let out = dir.path().join("o.safetensors");
    let o = out.to_str().unwrap();
    // Another shape.
    let b = write(
        dir.path(),
        "b.safetensors",
        vec![1.0; 9],
        vec![
            ("dense0.bias".into(), vec![3]),
            ("dense0.weight".into(), vec![3, 2]),
        ],
    );
    let (ok, text) = run(&["--kernel", "mean", "--out", o], &[a.clone(), b]);
    assert!(
        !ok && text.contains("b.safetensors")
            && text.contains("dense0.weight")
            && text.contains("shape"),
        "{text}"
    );
    // A missing tensor.
    let c = write(
        dir.path(),
        "c.safetensors",
        vec![1.0; 3],
        vec![("dense0.bias".into(), vec![3])],
    );
    let (ok, text) = run(&["--kernel", "mean", "--out", o], &[a.clone(), c]);
    assert!(
        !ok && text.contains("c.safetensors") && text.contains("dense0.weight"),
        "{text}"
    );
    // Another dtype.
    let f64_bytes: Vec<u8> = [1.0f64; 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![3], &f64_bytes).unwrap();
    let d = dir.path().join("d.safetensors");
    std::fs::write(
        &d,
        safetensors::serialize(vec![("dense0.bias", view)], None).unwrap(),
    )
    .unwrap();
    let (ok, text) = run(&["--kernel", "mean", "--out", o], &[d, a.clone()]);
    assert!(
        !ok && text.contains("d.safetensors") && text.contains("F64"),
        "{text}"
    );
    // A NaN.
    let mut v = vec![1.0; 9];
    v[4] = f32::NAN;
    let e = write(dir.path(), "e.safetensors", v, layout());
    let (ok, text) = run(&["--kernel", "median", "--out", o], &[a.clone(), e]);
    assert!(
        !ok && text.contains("e.safetensors") && text.contains("NaN"),
        "{text}"
    );
    // Parameters.
    let (ok, text) = run(
        &["--kernel", "bulyan", "--byzantine", "1", "--out", o],
        &[a.clone(), a.clone(), a.clone()],
    );
    assert!(!ok && text.contains("at least 7"), "{text}");
    let (ok, text) = run(
        &["--kernel", "trimmed-mean", "--trim", "0.7", "--out", o],
        std::slice::from_ref(&a),
    );
    assert!(!ok && text.contains("[0, 0.5)"), "{text}");
    assert!(!out.exists(), "no output is written on error");
}
