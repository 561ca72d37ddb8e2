//! `fedsilo aggregate`

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use fedsilo::kernels::Kernel;
use fedsilo::model::tensor_file::MappedSet;
use fedsilo::model::Digest;

/// Combine update files offline with a kernel, as a round does.
///
/// Every input is a safetensors file of F32 tensors with the same names and shapes; they are
/// flattened in name order, combined, and written with the same layout. The output's digest
/// (SHA-256 of its values, little-endian) is printed so an auditor can compare it with the one
/// recorded for a round. Inputs are mapped into memory and F32 files read in place; the time
/// spent reading, combining and writing is printed.
///
/// Example:
///   fedsilo aggregate --kernel trimmed-mean --trim 0.2 --out agg.safetensors a.safetensors b.safetensors c.safetensors
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct AggregateArgs {
    /// The kernel: mean, trimmed-mean, median, krum, multi-krum, bulyan.
    #[arg(long)]
    kernel: String,
    /// trimmed-mean: β in [0, 0.5), the fraction cut from each tail.
    #[arg(long)]
    trim: Option<f64>,
    /// krum, multi-krum, bulyan: f, the Byzantine inputs to tolerate.
    #[arg(long)]
    byzantine: Option<usize>,
    /// multi-krum: m, how many best-scored inputs to average.
    #[arg(long)]
    keep: Option<usize>,
    /// Example counts, one per input in order (default 1 each); used by mean and multi-krum.
    #[arg(long, value_delimiter = ',')]
    weights: Option<Vec<f64>>,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Input files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

/// Runs the command.
pub fn run(a: AggregateArgs) -> anyhow::Result<ExitCode> {
    let kernel = Kernel::parse(&a.kernel, a.trim, a.byzantine, a.keep)
        .map_err(|e| anyhow::anyhow!("--kernel {}: {e}", a.kernel))?;
    let started = std::time::Instant::now();
    let sets = a
        .inputs
        .iter()
        .map(|p| MappedSet::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let layout = sets[0].layout();
    for (set, path) in sets.iter().zip(&a.inputs).skip(1) {
        layout.check_same_layout(&set.layout(), &path.display().to_string())?;
    }
    let read = started.elapsed();
    let weights = a.weights.unwrap_or_else(|| vec![1.0; sets.len()]);
    if weights.len() != sets.len() {
        anyhow::bail!(
            "--weights has {} values for {} inputs",
            weights.len(),
            sets.len()
        );
    }
    let views: Vec<&[f32]> = sets.iter().map(MappedSet::values).collect();
    let combining = std::time::Instant::now();
    let combined = kernel.combine(&views, &weights).map_err(|e| {
        // Name the file for per-input errors.
        match &e {
            fedsilo::kernels::KernelError::NonFinite {
                update,
                index,
                value,
            } => {
                anyhow::anyhow!(
                    "{}: value {index} is {value} (not finite)",
                    a.inputs[*update].display()
                )
            }
            _ => anyhow::anyhow!("{e}"),
        }
    })?;
    let combine = combining.elapsed();
    let writing = std::time::Instant::now();
    let digest = Digest::of_f32(&combined.values);
    let mut meta = HashMap::new();
    meta.insert("fedsilo.kernel".to_string(), kernel.describe());
    meta.insert(
        "fedsilo.inputs".to_string(),
        a.inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    meta.insert("fedsilo.digest".to_string(), digest.hex());
    layout.write_like(&combined.values, &a.out, meta)?;
    let write = writing.elapsed();
    println!("kernel   {}", kernel.describe());
    println!("inputs   {} files × {} values", sets.len(), views[0].len());
    if let Some(sel) = &combined.selected {
        let names: Vec<String> = sel
            .iter()
            .map(|&i| a.inputs[i].display().to_string())
            .collect();
        println!("selected {}", names.join(", "));
    }
    println!("output   {}", a.out.display());
    println!("digest   {}", digest.hex());
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!(
        "time     read {:.1} ms ({} in place), combine {:.1} ms, digest and write {:.1} ms",
        ms(read),
        sets.iter().filter(|s| s.in_place()).count(),
        ms(combine),
        ms(write)
    );
    Ok(ExitCode::SUCCESS)
}
