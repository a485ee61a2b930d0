#!/usr/bin/env bash
# The two ceilings the CPU kernels run into, measured on this machine:
#   * f32 FMA peak: independent AVX-512 FMA chains (asm loop), in GMAC/s over N threads;
#   * read bandwidth: N threads summing one contiguous 256 MiB buffer each half, in GB/s.
# The exact path (f32 activations, f32 accumulation) cannot compute faster than the first;
# single-stream decode cannot read weights faster than the second.
#
#   benches/machine_peaks.sh [--threads N]      (needs gcc; x86-64 with AVX-512)
set -euo pipefail
THREADS=2
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
grep -qw avx512f /proc/cpuinfo || { echo "this probe needs AVX-512" >&2; exit 1; }
command -v gcc >/dev/null || { echo "gcc is needed (apt-get install gcc)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/peaks.c" <<'EOF'
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int threads;
static char *buf;
static size_t buf_len = 256ul << 20;
static volatile float sink[256];
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

/* 12 independent FMA chains: throughput-bound, not latency-bound. */
static void *fma_loop(void *arg) {
  long n = (long)arg;
  __asm__ volatile(
      "vxorps %%zmm1,%%zmm1,%%zmm1\n"
      "1:\n"
      "vfmadd231ps %%zmm1,%%zmm1,%%zmm2\n vfmadd231ps %%zmm1,%%zmm1,%%zmm3\n"
      "vfmadd231ps %%zmm1,%%zmm1,%%zmm4\n vfmadd231ps %%zmm1,%%zmm1,%%zmm5\n"
      "vfmadd231ps %%zmm1,%%zmm1,%%zmm6\n vfmadd231ps %%zmm1,%%zmm1,%%zmm7\n"
      "vfmadd231ps %%zmm1,%%zmm1,%%zmm8\n vfmadd231ps %%zmm1,%%zmm1,%%zmm9\n"
      "vfmadd231ps %%zmm1,%%zmm1,%%zmm10\n vfmadd231ps %%zmm1,%%zmm1,%%zmm11\n"
      "vfmadd231ps %%zmm1,%%zmm1,%%zmm12\n vfmadd231ps %%zmm1,%%zmm1,%%zmm13\n"
      "dec %0\n jnz 1b\n"
      : "+r"(n)::"xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13");
  return 0;
}

static void *read_loop(void *arg) {
  long id = (long)arg;
  size_t part = buf_len / threads;
  const char *p = buf + id * part;
  __m512 acc = _mm512_setzero_ps();
  for (int rep = 0; rep < 4; rep++) {
    __asm__ volatile("" ::: "memory");
    for (size_t i = 0; i < part; i += 64) acc = _mm512_add_ps(acc, _mm512_load_ps((const float *)(p + i)));
  }
  sink[id] = _mm512_reduce_add_ps(acc);
  return 0;
}

static double run(void *(*f)(void *), int by_id, long arg) {
  pthread_t th[256];
  double t = now();
  for (long i = 0; i < threads; i++) pthread_create(&th[i], 0, f, (void *)(by_id ? i : arg));
  for (int i = 0; i < threads; i++) pthread_join(th[i], 0);
  return now() - t;
}

int main(int argc, char **argv) {
  threads = atoi(argv[1]);
  long iters = 100000000;
  double best = 1e9;
  for (int r = 0; r < 3; r++) { double s = run(fma_loop, 0, iters); if (s < best) best = s; }
  double fmas = 12.0 * iters * threads / best;
  printf("f32 FMA peak:   %6.1f GMAC/s  (%.2f G zmm-FMA/s per thread, %d threads)\n", fmas * 16 / 1e9, fmas / threads / 1e9, threads);
  buf = aligned_alloc(64, buf_len);
  for (size_t i = 0; i < buf_len; i += 4096) buf[i] = 1;
  best = 1e9;
  for (int r = 0; r < 3; r++) { double s = run(read_loop, 1, 0); if (s < best) best = s; }
  printf("read bandwidth: %6.1f GB/s    (%d threads, 256 MiB, best of 3)\n", 4.0 * buf_len / best / 1e9, threads);
  return 0;
}
EOF
gcc -O2 -mavx512f -pthread "$tmp/peaks.c" -o "$tmp/peaks"
"$tmp/peaks" "$THREADS"
