//! Criterion benchmarks of every CPU kernel at SmolLM2-135M shapes (hidden 576, FFN 1536,
//! vocab 49152, 9 heads / 3 KV heads of 64): `cargo bench -p keel-kernels`.
//! Throughput is reported in elements (multiply-adds for matmuls). Thread count: the
//! kernel pool's default (all CPUs) unless `KEEL_BENCH_THREADS` is set.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keel_kernels::aligned::AlignedBuf;
use keel_kernels::attention::{layer_len, paged_attention, write_kv, AttnSeq, PagedKv, BLOCK};
use keel_kernels::matmul::panels::{matmul_panels, PanelMatrix};
use keel_kernels::matmul::{matmul_with, Precision};
use keel_kernels::test_util::{random_row, Lcg};
use keel_kernels::{matmul, DType, WeightMatrix};
use std::hint::black_box;

fn setup() {
    if let Some(n) = std::env::var("KEEL_BENCH_THREADS").ok().and_then(|s| s.parse().ok()) {
        keel_kernels::parallel::set_num_threads(n);
    }
}

fn aligned(n: usize, rng: &mut Lcg) -> AlignedBuf {
    let mut b = AlignedBuf::zeros(n);
    b.iter_mut().for_each(|v| *v = rng.normal());
    b
}

fn bench_matmul(c: &mut Criterion) {
    setup();
    let mut rng = Lcg(1);
    for dtype in [DType::Q4_1, DType::Q5_0, DType::Q8_0, DType::F16, DType::BF16, DType::Q4K, DType::Q6K] {
        let mut g = c.benchmark_group(format!("matmul/{dtype}"));
        g.sample_size(20);
        for (rows, cols) in [(1536usize, 576usize), (576, 1536), (49152, 576)] {
            if cols % dtype.block_size() != 0 {
                continue;
            }
            let w: Vec<u8> = (0..rows).flat_map(|_| random_row(dtype, cols, &mut rng)).collect();
            let wm = WeightMatrix::new(dtype, &w, rows, cols).expect("shape");
            for t in [1usize, 32, 512] {
                if rows == 49152 && t == 512 {
                    continue; // the lm_head only sees sampled rows
                }
                let x = aligned(t * cols, &mut rng);
                let mut out = vec![0f32; t * rows];
                g.throughput(Throughput::Elements((rows * cols * t) as u64));
                g.bench_function(BenchmarkId::new(format!("{rows}x{cols}"), format!("T{t}")), |b| {
                    b.iter(|| matmul(&wm, black_box(&x), &mut out))
                });
            }
        }
        g.finish();
    }
}

/// The opt-in `Precision::Medium` path (BF16 dot products) on BF16 weights, to set against
/// `matmul/BF16` (skipped where the CPU lacks AVX512-BF16).
fn bench_matmul_medium(c: &mut Criterion) {
    setup();
    if !keel_kernels::matmul::medium_available() {
        return;
    }
    let mut rng = Lcg(1);
    let mut g = c.benchmark_group("matmul_medium/BF16");
    g.sample_size(20);
    for (rows, cols) in [(1536usize, 576usize), (576, 1536), (49152, 576)] {
        let w: Vec<u8> = (0..rows).flat_map(|_| random_row(DType::BF16, cols, &mut rng)).collect();
        let wm = WeightMatrix::new(DType::BF16, &w, rows, cols).expect("shape");
        for t in [1usize, 32, 512] {
            if rows == 49152 && t == 512 {
                continue;
            }
            let x = aligned(t * cols, &mut rng);
            let mut out = vec![0f32; t * rows];
            g.throughput(Throughput::Elements((rows * cols * t) as u64));
            g.bench_function(BenchmarkId::new(format!("{rows}x{cols}"), format!("T{t}")), |b| {
                b.iter(|| matmul_with(Precision::Medium, &wm, black_box(&x), &mut out))
            });
        }
    }
    g.finish();
}

/// 30 layers of random `dtype` matrices of `shapes` (`[rows, cols]`), each row-major bytes.
fn random_layers(dtype: DType, shapes: &[(usize, usize)], rng: &mut Lcg) -> Vec<Vec<Vec<u8>>> {
    (0..30)
        .map(|_| shapes.iter().map(|&(r, k)| (0..r).flat_map(|_| random_row(dtype, k, rng)).collect()).collect())
        .collect()
}

/// One decode step's linear layers as the model runs them: a layer's seven matrices
/// (q, k, v, o, gate, up, down) one after the other, over 30 layers' worth of distinct
/// weights (more than any L3), so every byte comes from memory as in `runtime bench`.
fn bench_decode_layers(c: &mut Criterion) {
    setup();
    let mut rng = Lcg(5);
    let mut g = c.benchmark_group("decode_layers");
    g.sample_size(10);
    let shapes = [(576usize, 576usize), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)];
    let mut runs = vec![
        (DType::Q4_1, Precision::Highest),
        (DType::Q8_0, Precision::Highest),
        (DType::F16, Precision::Highest),
        (DType::BF16, Precision::Highest),
    ];
    if keel_kernels::matmul::medium_available() {
        for dtype in [DType::Q4_1, DType::Q8_0, DType::F16, DType::BF16] {
            runs.push((dtype, Precision::Medium));
        }
    }
    for (dtype, precision) in runs {
        let layers = random_layers(dtype, &shapes, &mut rng);
        // One token (single-stream decode: bandwidth) and 32 (a 32-sequence decode step:
        // compute, with the weights still coming from memory).
        for tokens in [1usize, 32] {
            let x = aligned(tokens * 1536, &mut rng);
            let mut out = vec![0f32; tokens * 1536];
            let macs: usize = shapes.iter().map(|(r, k)| r * k).sum::<usize>() * layers.len() * tokens;
            g.throughput(Throughput::Elements(macs as u64));
            let mut name = dtype.name().to_string();
            if precision == Precision::Medium {
                name += "-medium";
            }
            if tokens > 1 {
                name += &format!("/T{tokens}");
            }
            g.bench_function(name, |b| {
                b.iter(|| {
                    for layer in &layers {
                        for (&(r, k), w) in shapes.iter().zip(layer) {
                            let wm = WeightMatrix::new(dtype, w, r, k).expect("shape");
                            matmul_with(precision, &wm, black_box(&x[..tokens * k]), &mut out[..tokens * r]);
                        }
                    }
                })
            });
        }
    }
    // The same layers repacked into 16-row panels (`matmul::panels`: what the exact
    // AVX-512 path of a model reads for those types).
    for dtype in [DType::Q8_0, DType::F16, DType::BF16] {
        let layers: Vec<Vec<PanelMatrix>> = random_layers(dtype, &shapes, &mut rng)
            .iter()
            .map(|layer| {
                shapes
                    .iter()
                    .zip(layer)
                    .map(|(&(r, k), w)| {
                        PanelMatrix::from_weights(&WeightMatrix::new(dtype, w, r, k).expect("shape"))
                            .expect("a type with panels")
                    })
                    .collect()
            })
            .collect();
        for tokens in [1usize, 32] {
            let x = aligned(tokens * 1536, &mut rng);
            let mut out = vec![0f32; tokens * 1536];
            let macs: usize = shapes.iter().map(|(r, k)| r * k).sum::<usize>() * layers.len() * tokens;
            g.throughput(Throughput::Elements(macs as u64));
            g.bench_function(format!("{}-panels/T{tokens}", dtype.name()), |b| {
                b.iter(|| {
                    for layer in &layers {
                        for (&(r, k), w) in shapes.iter().zip(layer) {
                            matmul_panels(w, black_box(&x[..tokens * k]), &mut out[..tokens * r]);
                        }
                    }
                })
            });
        }
    }
    g.finish();
}

fn bench_attention(c: &mut Criterion) {
    setup();
    let (nh, nkv, hd) = (9, 3, 64);
    let mut rng = Lcg(2);
    let mut g = c.benchmark_group("attention");
    for (ctx, q_len, n_seqs) in [(256usize, 1usize, 1usize), (256, 1, 32), (512, 512, 1)] {
        let blocks_per_seq = ctx.div_ceil(BLOCK);
        let num_blocks = blocks_per_seq * n_seqs;
        let mut kc = vec![0f32; layer_len(num_blocks, nkv, hd)];
        let mut vc = kc.clone();
        for slot in 0..num_blocks * BLOCK {
            let k: Vec<f32> = (0..nkv * hd).map(|_| rng.normal()).collect();
            write_kv(&mut kc, &mut vc, slot, &k, &k, nkv, hd);
        }
        let tables: Vec<Vec<u32>> =
            (0..n_seqs).map(|s| ((s * blocks_per_seq) as u32..((s + 1) * blocks_per_seq) as u32).collect()).collect();
        let seqs: Vec<AttnSeq> = tables
            .iter()
            .enumerate()
            .map(|(s, t)| AttnSeq { query_start: s * q_len, query_len: q_len, context_len: ctx, block_table: t })
            .collect();
        let q = aligned(n_seqs * q_len * nh * hd, &mut rng);
        let mut out = vec![0f32; q.len()];
        let kv = PagedKv { k: &kc, v: &vc, n_kv_heads: nkv, head_dim: hd };
        g.throughput(Throughput::Elements((n_seqs * q_len) as u64));
        g.bench_function(format!("ctx{ctx}_q{q_len}_seqs{n_seqs}"), |b| {
            b.iter(|| paged_attention(black_box(&q), &seqs, &kv, nh, 0.125, &mut out))
        });
    }
    // A 32-sequence decode step's attention over 30 layers of distinct caches (377 MB, so
    // streamed from memory as in `runtime bench offline`; the cases above stay in L3), the
    // sequences' blocks interleaved over the pool as the engine hands them out.
    let (ctx, n_seqs, n_layers) = (192usize, 32usize, 30usize);
    let blocks_per_seq = ctx.div_ceil(BLOCK);
    let num_blocks = blocks_per_seq * n_seqs;
    let layers: Vec<(Vec<f32>, Vec<f32>)> = (0..n_layers)
        .map(|_| {
            let kc: Vec<f32> = (0..layer_len(num_blocks, nkv, hd)).map(|_| rng.normal()).collect();
            (kc.clone(), kc)
        })
        .collect();
    let tables: Vec<Vec<u32>> =
        (0..n_seqs).map(|s| (0..blocks_per_seq).map(|b| (b * n_seqs + s) as u32).collect()).collect();
    let seqs: Vec<AttnSeq> = tables
        .iter()
        .enumerate()
        .map(|(s, t)| AttnSeq { query_start: s, query_len: 1, context_len: ctx, block_table: t })
        .collect();
    let q = aligned(n_seqs * nh * hd, &mut rng);
    let mut out = vec![0f32; q.len()];
    g.throughput(Throughput::Elements(n_seqs as u64));
    g.sample_size(10);
    g.bench_function(format!("streamed_ctx{ctx}_seqs{n_seqs}_{n_layers}layers"), |b| {
        b.iter(|| {
            for (kc, vc) in &layers {
                let kv = PagedKv { k: kc, v: vc, n_kv_heads: nkv, head_dim: hd };
                paged_attention(black_box(&q), &seqs, &kv, nh, 0.125, &mut out);
            }
        })
    });
    // The same with an F16 cache (`--kv-cache-dtype f16`): half the bytes to stream.
    let to_f16 = |x: &[f32]| x.iter().map(|v| half::f16::from_f32(*v)).collect::<Vec<_>>();
    let layers: Vec<(Vec<half::f16>, Vec<half::f16>)> = layers.iter().map(|(k, v)| (to_f16(k), to_f16(v))).collect();
    g.bench_function(format!("streamed_f16_ctx{ctx}_seqs{n_seqs}_{n_layers}layers"), |b| {
        b.iter(|| {
            for (kc, vc) in &layers {
                let kv = PagedKv { k: kc, v: vc, n_kv_heads: nkv, head_dim: hd };
                paged_attention(black_box(&q), &seqs, &kv, nh, 0.125, &mut out);
            }
        })
    });
    g.finish();
}

fn bench_elementwise(c: &mut Criterion) {
    let mut rng = Lcg(3);
    let mut g = c.benchmark_group("elementwise");
    let x: Vec<f32> = (0..512 * 576).map(|_| rng.normal()).collect();
    let w: Vec<f32> = (0..576).map(|_| rng.normal()).collect();
    let mut out = vec![0f32; x.len()];
    g.throughput(Throughput::Elements(x.len() as u64));
    g.bench_function("rms_norm_512x576", |b| {
        b.iter(|| keel_kernels::norm::rms_norm(black_box(&x), &w, 1e-5, &mut out))
    });
    let up: Vec<f32> = (0..512 * 1536).map(|_| rng.normal()).collect();
    let mut gate: Vec<f32> = (0..512 * 1536).map(|_| rng.normal()).collect();
    g.throughput(Throughput::Elements(up.len() as u64));
    g.bench_function("silu_mul_512x1536", |b| b.iter(|| keel_kernels::activation::silu_mul(black_box(&mut gate), &up)));
    let mut e: Vec<f32> = (0..49152).map(|_| rng.normal()).collect();
    g.throughput(Throughput::Elements(e.len() as u64));
    g.bench_function("logsumexp_49152", |b| b.iter(|| keel_kernels::exp::logsumexp(black_box(&e))));
    g.bench_function("exp_49152", |b| b.iter(|| keel_kernels::exp::exp_slice(black_box(&mut e))));
    g.finish();
}

fn bench_dot(c: &mut Criterion) {
    let mut rng = Lcg(4);
    let mut g = c.benchmark_group("dot_row");
    for dtype in DType::ALL {
        let n = 1536.max(dtype.block_size());
        let w = random_row(dtype, n, &mut rng);
        let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(dtype.name(), |b| b.iter(|| keel_kernels::dot::dot_row(dtype, black_box(&w), &x)));
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_matmul,
    bench_matmul_medium,
    bench_decode_layers,
    bench_attention,
    bench_elementwise,
    bench_dot
);
criterion_main!(benches);
