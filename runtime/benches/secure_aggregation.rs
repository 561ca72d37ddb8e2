//! Secure aggregation versus plain aggregation: one round of 10 silos with updates of 10⁶
//! parameters, through the real code path on both sides — wire frames encoded and decoded,
//! keys generated, signed and checked, secrets split and encrypted, updates quantised, masked
//! and packed, the sum unmasked — against the plain path (update frames decoded and folded
//! into the weighted mean).
//!
//! Silos are separate machines in a federation, so a round's time is modelled as, for each
//! step, the slowest silo's work plus the coordinator's: each silo's part is timed on its
//! own. Local training and the model download are the same in both rounds and left out, so
//! the ratio is the overhead on the aggregation path alone (the worst case for the ratio).
//! Bytes are counted from the frames; the ratio is per silo, silo → coordinator.
//!
//!   cargo bench -p fedsilo --bench secure_aggregation

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use fedsilo::certs::CertificateAuthority;
use fedsilo::identity::signature::CaCheck;
use fedsilo::identity::{Identity, Role};
use fedsilo::kernels::WeightedMean;
use fedsilo::protocol::{decode, encode, Request, Response};
use fedsilo::secagg::collector::Collector;
use fedsilo::secagg::messages::RingSpec;
use fedsilo::secagg::participant::Participant;
use fedsilo::secagg::quantize::Quantizer;
use fedsilo::tls::NodeCredentials;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SILOS: usize = 10;
const LEN: usize = 1_000_000;
const ROUND: u64 = 1;

struct Fixture {
    creds: Vec<NodeCredentials>,
    ca: CaCheck,
    updates: Vec<Vec<f32>>,
    examples: Vec<f64>,
}

fn fixture() -> Fixture {
    fedsilo::tls::install_crypto_provider();
    let (ca, _) = CertificateAuthority::generate("bench", 30).expect("bench CA");
    let creds: Vec<NodeCredentials> = (0..SILOS)
        .map(|i| {
            let id = Identity {
                name: format!("silo-{i:02}"),
                role: Role::Silo,
                region: "eu".into(),
            };
            ca.credentials(&id, 30).expect("bench credentials")
        })
        .collect();
    let updates = (0..SILOS)
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
            (0..LEN).map(|_| rng.random_range(-0.05f32..0.05)).collect()
        })
        .collect();
    Fixture {
        ca: CaCheck::new(creds[0].roots()),
        creds,
        updates,
        examples: (0..SILOS).map(|i| 1000.0 + 100.0 * i as f64).collect(),
    }
}

/// One round's cost: modelled wall time (slowest silo per step + coordinator), total CPU time
/// (every silo's work added up), and bytes each silo sent.
#[derive(Debug, Default, Clone, Copy)]
struct Cost {
    round: Duration,
    compute: Duration,
    sent_per_silo: f64,
}

impl Cost {
    /// Runs `f` once per silo, each timed alone: the step takes as long as the slowest.
    fn silos<T>(&mut self, mut f: impl FnMut(usize) -> T) -> Vec<T> {
        let mut slowest = Duration::ZERO;
        let out = (0..SILOS)
            .map(|i| {
                let t = Instant::now();
                let r = f(i);
                let e = t.elapsed();
                slowest = slowest.max(e);
                self.compute += e;
                r
            })
            .collect();
        self.round += slowest;
        out
    }

    /// Runs the coordinator's part of a step.
    fn coordinator<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        let e = t.elapsed();
        self.round += e;
        self.compute += e;
        r
    }

    fn sent(&mut self, frames: &[Vec<u8>]) {
        self.sent_per_silo += frames.iter().map(|f| f.len()).sum::<usize>() as f64 / SILOS as f64;
    }
}

fn answer(frame: &[u8]) -> Response {
    decode::<Response>(frame, "silo").expect("a well-formed response")
}

fn request(frame: &[u8]) -> Request {
    decode::<Request>(frame, "coordinator").expect("a well-formed request")
}

/// The plain round: each silo sends its update, the coordinator folds them into the mean.
fn plain_round(fx: &Fixture) -> (Cost, Vec<f32>) {
    let mut c = Cost::default();
    let frames = c.silos(|i| {
        encode(&Response::UpdateChunk {
            values: fx.updates[i].clone(),
        })
    });
    c.sent(&frames);
    let mean = c.coordinator(|| {
        let mut acc = WeightedMean::new(LEN);
        for (f, w) in frames.iter().zip(&fx.examples) {
            let Response::UpdateChunk { values } = answer(f) else {
                panic!("not an update")
            };
            acc.fold(&values, *w).expect("a finite update");
        }
        acc.finish().expect("a mean")
    });
    (c, mean)
}

/// The secure round: keys, escrow, delivery, masked updates, unmasking.
fn secure_round(fx: &Fixture) -> (Cost, Vec<f32>) {
    let mut c = Cost::default();
    let ring = RingSpec {
        bits: 32,
        range: 1.0,
        max_silos: SILOS as u32,
    };
    let t = fedsilo::secagg::messages::minimum_threshold(SILOS);
    // 1. Keys.
    let mut parts: Vec<Option<Participant>> = vec![];
    let ads = c.silos(|i| {
        let p = Participant::new(ROUND, &fx.creds[i]).expect("keys");
        let f = encode(&Response::SecAggAdvertised(p.advertisement().clone()));
        parts.push(Some(p));
        f
    });
    c.sent(&ads);
    let mut col = Collector::new(
        ROUND,
        t,
        Quantizer::new(ring.bits, ring.range, SILOS).expect("ring"),
        LEN,
    );
    let share_req = c.coordinator(|| {
        let list = ads
            .iter()
            .map(|f| match answer(f) {
                Response::SecAggAdvertised(ad) => ad,
                _ => panic!("not an advertisement"),
            })
            .collect();
        col.advertised(list).expect("enough keys");
        encode(&Request::SecAggShare {
            round: ROUND,
            threshold: t as u32,
            advertisements: col.advertisements(),
        })
    });
    // 2. Escrow.
    let shares = c.silos(|i| {
        let Request::SecAggShare {
            threshold,
            advertisements,
            ..
        } = request(&share_req)
        else {
            panic!("not a key list")
        };
        let p = parts[i].as_mut().expect("a participant");
        let sealed = p
            .share(&fx.ca, threshold as usize, &advertisements)
            .expect("valid keys");
        encode(&Response::SecAggShares(sealed))
    });
    c.sent(&shares);
    let names: Vec<String> = fx.creds.iter().map(|k| k.identity().name.clone()).collect();
    let deliveries = c.coordinator(|| {
        for (f, name) in shares.iter().zip(&names) {
            let Response::SecAggShares(v) = answer(f) else {
                panic!("not shares")
            };
            col.shared(name, v).expect("well-formed shares");
        }
        col.sharing_closed().expect("enough sharers");
        names
            .iter()
            .map(|n| {
                encode(&Request::SecAggDeliver {
                    round: ROUND,
                    ring,
                    shares: col.relayed_to(n),
                })
            })
            .collect::<Vec<_>>()
    });
    // 3. Delivery.
    let ready = c.silos(|i| {
        let Request::SecAggDeliver { ring, shares, .. } = request(&deliveries[i]) else {
            panic!("not a delivery")
        };
        let p = parts[i].as_mut().expect("a participant");
        p.receive(ring, &shares).expect("authentic shares");
        encode(&Response::SecAggReady)
    });
    c.sent(&ready);
    // 4. Masked updates, weighed against the largest weight.
    let top = fx.examples.iter().cloned().fold(0.0, f64::max);
    let masked = c.silos(|i| {
        let p = parts[i].as_mut().expect("a participant");
        let m = p
            .mask(&fx.updates[i], fx.examples[i] / top)
            .expect("a masked update");
        encode(&Response::MaskedChunk { bytes: m.to_vec() })
    });
    c.sent(&masked);
    let unmask_req = c.coordinator(|| {
        for (i, f) in masked.iter().enumerate() {
            let Response::MaskedChunk { bytes } = answer(f) else {
                panic!("not a masked update")
            };
            col.fold(&names[i], &bytes, fx.examples[i] / top)
                .expect("a masked update of the right length");
        }
        let (survivors, dropped) = col.unmasking().expect("enough survivors");
        encode(&Request::SecAggUnmask {
            round: ROUND,
            survivors,
            dropped,
        })
    });
    // 5. Unmasking.
    let revealed = c.silos(|i| {
        let Request::SecAggUnmask {
            survivors, dropped, ..
        } = request(&unmask_req)
        else {
            panic!("not an unmasking request")
        };
        let p = parts[i].as_mut().expect("a participant");
        encode(&Response::SecAggRevealed(
            p.reveal(&survivors, &dropped).expect("shares"),
        ))
    });
    c.sent(&revealed);
    let mean = c.coordinator(|| {
        for (f, name) in revealed.iter().zip(&names) {
            let Response::SecAggRevealed(v) = answer(f) else {
                panic!("not shares")
            };
            col.revealed(name, v).expect("asked-for shares");
        }
        col.finish().expect("an unmasked sum")
    });
    (c, mean)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bench(c: &mut Criterion) {
    let fx = fixture();
    // The two paths agree (within the quantisation error): the secure path measured is real.
    let (_, plain) = plain_round(&fx);
    let (_, secure) = secure_round(&fx);
    let worst = plain
        .iter()
        .zip(&secure)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "secure and plain means differ by {worst}");

    let mut g = c.benchmark_group("round_10_silos_1M");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    g.bench_function("plain", |b| {
        b.iter_custom(|n| (0..n).map(|_| black_box(plain_round(&fx)).0.round).sum())
    });
    g.bench_function("secure_aggregation", |b| {
        b.iter_custom(|n| (0..n).map(|_| black_box(secure_round(&fx)).0.round).sum())
    });
    g.finish();

    // Ratios from rounds measured back to back in this run (these machines are noisy).
    let (mut time, mut cpu) = (Vec::new(), Vec::new());
    let (mut p_cost, mut s_cost) = (Cost::default(), Cost::default());
    for _ in 0..7 {
        p_cost = plain_round(&fx).0;
        s_cost = secure_round(&fx).0;
        time.push(s_cost.round.as_secs_f64() / p_cost.round.as_secs_f64());
        cpu.push(s_cost.compute.as_secs_f64() / p_cost.compute.as_secs_f64());
    }
    println!(
        "secure aggregation, {SILOS} silos x {LEN} parameters (median of 7 paired rounds):\n  \
         round time   {:.2}x plain (target <= 2x; last pair {:.1} ms vs {:.1} ms)\n  \
         total CPU    {:.2}x plain (every silo's work added up)\n  \
         bytes/silo   {:.4}x plain (target <= 1.2x; {:.0} vs {:.0} bytes sent)",
        median(time),
        s_cost.round.as_secs_f64() * 1e3,
        p_cost.round.as_secs_f64() * 1e3,
        median(cpu),
        s_cost.sent_per_silo / p_cost.sent_per_silo,
        s_cost.sent_per_silo,
        p_cost.sent_per_silo,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
