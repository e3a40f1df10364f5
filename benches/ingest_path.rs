//! Criterion benchmarks of the verify-canonicalise-append path.
//!
//! - `judge/one_event`: parse (I-JSON), JCS twice, SHA-256 twice, schema,
//!   key lookup, strict Ed25519: the per-event CPU cost;
//!   `judge/one_event_with_table`: the same with the key's precomputed table.
//! - `canonicalise/one_event`: parse and JCS only.
//! - `pipeline/batch_1000`: a batch of 1000 pre-signed events through the
//!   whole pipeline (parallel judging, sequencing, append, fdatasync) into
//!   a temporary data directory. Events are signed before timing starts.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::SigningKey;
use vigil::event::tables::{Check, TableCache, TableShape, DEFAULT_TABLE_BYTES};
use vigil::keys::private::PrivateJwk;
use vigil::keys::{parse_jwks, KeySet, TimeRules};
use vigil::pipeline::judge::{judge, Context};
use vigil::pipeline::{Item, Pipeline, PipelineConfig};
use vigil::time::Timestamp;

fn key() -> PrivateJwk {
    PrivateJwk {
        kid: "bench#1".into(),
        agent_id: Some("bench-agent".into()),
        key: SigningKey::from_bytes(&[42; 32]),
    }
}

fn event(k: &PrivateJwk, i: u64) -> Vec<u8> {
    vigil::loadgen::make_event(k, i as usize, &Timestamp::now().to_rfc3339_millis())
}

fn jwks(k: &PrivateJwk) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "keys": [k.public_jwk()] })).unwrap()
}

fn bench_judge(c: &mut Criterion) {
    let k = key();
    let set = KeySet::merge([&parse_jwks(&jwks(&k)).unwrap()]).unwrap();
    let raw = event(&k, 1);
    let rules = TimeRules::default();
    let none = TableCache::new(0);
    let warm = TableCache::new(1 << 20);
    let public =
        vigil::event::signature::parse_public_key(k.key.verifying_key().as_bytes()).unwrap();
    warm.insert(&public);
    let nobody = std::collections::HashSet::new();
    let mut g = c.benchmark_group("judge");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_event", |b| {
        b.iter(|| {
            let ctx = Context {
                keys: &set,
                rules: &rules,
                tables: &none,
                received_at: Timestamp::now(),
                suspended: &nobody,
            };
            judge(&raw, &ctx)
        })
    });
    g.bench_function("one_event_with_table", |b| {
        b.iter(|| {
            let ctx = Context {
                keys: &set,
                rules: &rules,
                tables: &warm,
                received_at: Timestamp::now(),
                suspended: &nobody,
            };
            judge(&raw, &ctx)
        })
    });
    g.finish();
    let mut g = c.benchmark_group("verify");
    let msg = vec![b'x'; 600];
    let sig = vigil::event::signature::sign(&k.key, &msg);
    let table = vigil::event::tables::KeyTable::new(&public, TableShape::FULL);
    g.bench_function("usual", |b| {
        b.iter(|| vigil::event::signature::verify(&public, &msg, &sig))
    });
    g.bench_function("table", |b| b.iter(|| table.verify(&msg, &sig)));
    g.bench_function("table_build", |b| {
        b.iter(|| vigil::event::tables::KeyTable::new(&public, TableShape::FULL))
    });
    let dalek_sig = ed25519_dalek::Signature::from_bytes(&sig);
    g.bench_function("verify_strict", |b| {
        b.iter(|| public.verify_strict(&msg, &dalek_sig).is_ok())
    });
    // [S]B - [k]A alone, by window width of A's table.
    let s_bytes: [u8; 32] = sig[32..].try_into().unwrap();
    let k_bytes = curve25519_dalek::Scalar::from_bytes_mod_order_wide(&[0x5a; 64]).to_bytes();
    for w in 4..=8 {
        let t = vigil::event::edwards::FixedBase::new(public.as_bytes(), w).unwrap();
        g.bench_function(format!("base_minus_w{w}"), |b| {
            b.iter(|| vigil::event::edwards::base_minus(&s_bytes, &k_bytes, &t))
        });
    }
    // Keys in turn, as the server sees them: 64 tables do not fit in a
    // core's L2 cache.
    for n in [8usize, 64, 512] {
        let keys: Vec<_> = (0..n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[0] = (i % 250) as u8 + 1;
                seed[1] = (i / 250) as u8;
                seed[31] = 1;
                let sk = SigningKey::from_bytes(&seed);
                let pk = vigil::event::signature::parse_public_key(sk.verifying_key().as_bytes())
                    .unwrap();
                let sig = vigil::event::signature::sign(&sk, &msg);
                (
                    pk,
                    vigil::event::tables::KeyTable::new(&pk, TableShape::FULL),
                    sig,
                )
            })
            .collect();
        let mut i = 0;
        g.bench_function(format!("usual_{n}_keys"), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                let (pk, _, sig) = &keys[i];
                vigil::event::signature::verify(pk, &msg, sig)
            })
        });
        g.bench_function(format!("table_{n}_keys"), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                let (_, t, sig) = &keys[i];
                t.verify(&msg, sig)
            })
        });
        // What a batch of events does: every key's check at once, through
        // the cache (one shared inversion; eight lanes with AVX-512 IFMA,
        // unless VIGIL_IFMA=0). Per check: divide by n.
        let cache = TableCache::new(1 << 30);
        let checks: Vec<Check> = keys
            .iter()
            .map(|(pk, _, sig)| {
                cache.insert(pk);
                Check {
                    key: pk,
                    msg: &msg,
                    sig,
                }
            })
            .collect();
        g.bench_function(format!("table_batch_of_{n}_keys"), |b| {
            b.iter(|| cache.verify_all(&checks))
        });
        // Compact tables: each key gets what the default budget gives each
        // of 10,000 keys (one 4-bit window in 11, 40 doublings a check).
        let compact = TableCache::new(n * DEFAULT_TABLE_BYTES / 10_000);
        compact.prepare(keys.iter().map(|(pk, ..)| pk));
        while compact.len() < n {
            std::thread::sleep(Duration::from_millis(1));
        }
        g.bench_function(format!("compact_batch_of_{n}_keys"), |b| {
            b.iter(|| compact.verify_all(&checks))
        });
        // The same batch with no tables: the cold path.
        let none = TableCache::new(0);
        g.bench_function(format!("cold_batch_of_{n}_keys"), |b| {
            b.iter(|| none.verify_all(&checks))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("canonicalise");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_event", |b| {
        b.iter(|| vigil::event::Event::parse(&raw).unwrap());
    });
    g.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let k = key();
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("keys.json");
    std::fs::write(&jwks_path, jwks(&k)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = PipelineConfig::new(dir.path().join("data"));
    cfg.jwks = vec![jwks_path.display().to_string()];
    let pipeline = rt.block_on(async { Pipeline::open(&cfg) }).unwrap();
    let mut counter = 0u64;
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1000));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("batch_1000", |b| {
        b.iter_custom(|iters| {
            let batches: Vec<Vec<Item>> = (0..iters)
                .map(|_| {
                    (0..1000)
                        .map(|_| {
                            counter += 1;
                            Item::new(bytes::Bytes::from(event(&k, counter)), "bench")
                        })
                        .collect()
                })
                .collect();
            let start = Instant::now();
            rt.block_on(async {
                for batch in batches {
                    let results = pipeline.ingest(batch).await.unwrap();
                    assert!(results
                        .iter()
                        .all(|r| r.status == vigil::pipeline::Status::Accepted));
                }
            });
            start.elapsed()
        })
    });
    g.finish();
    rt.block_on(pipeline.shutdown());
}

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, bench_judge, bench_pipeline);
}

criterion_main!(group::benches);
