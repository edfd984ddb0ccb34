// peak.cpp: measured fp32 FMA peak of this machine for a given thread count.
//
// Each thread runs a loop of independent fused multiply-adds on 12 vector accumulators:
// more chains than FMA latency x FMA ports (4 x 2 on current x86), so the loop is
// bound by FMA throughput alone. The widest instruction set the CPU has is chosen at run
// time (AVX-512, else AVX2 + FMA, else scalar) through per-function target attributes,
// so the `miras` tool itself stays portable (no -march=native). The accumulators follow
// acc = acc * a + b with a just below 1: they converge, never overflow nor go subnormal.
#include "peak.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MIRAS_PEAK_X86 1
#endif

namespace miras::bench {

namespace {

constexpr int kAccumulators = 12;

#if MIRAS_PEAK_X86
__attribute__((target("avx512f"))) float fmaLoopAvx512(int64_t iterations) {
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
  __m512 acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i)
    acc[i] = _mm512_set1_ps(0.01f * static_cast<float>(i));
  for (int64_t n = 0; n < iterations; ++n)
    for (int i = 0; i < kAccumulators; ++i) // unrolled: the array lives in 12 zmm registers
      acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 sum = acc[0];
  for (int i = 1; i < kAccumulators; ++i)
    sum = _mm512_add_ps(sum, acc[i]);
  float lanes[16]; // stored rather than _mm512_reduce_add_ps, which GCC 12 warns about
  _mm512_storeu_ps(lanes, sum);
  float total = 0.0f;
  for (float lane : lanes)
    total += lane;
  return total;
}

__attribute__((target("avx2,fma"))) float fmaLoopAvx2(int64_t iterations) {
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
  __m256 acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i)
    acc[i] = _mm256_set1_ps(0.01f * static_cast<float>(i));
  for (int64_t n = 0; n < iterations; ++n)
    for (int i = 0; i < kAccumulators; ++i)
      acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 sum = acc[0];
  for (int i = 1; i < kAccumulators; ++i)
    sum = _mm256_add_ps(sum, acc[i]);
  float lanes[8];
  _mm256_storeu_ps(lanes, sum);
  float total = 0.0f;
  for (float lane : lanes)
    total += lane;
  return total;
}
#endif

float fmaLoopScalar(int64_t iterations) {
  float acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i)
    acc[i] = 0.01f * static_cast<float>(i);
  for (int64_t n = 0; n < iterations; ++n)
    for (int i = 0; i < kAccumulators; ++i)
      acc[i] = __builtin_fmaf(acc[i], 0.999999f, 1e-6f);
  float total = 0.0f;
  for (float x : acc)
    total += x;
  return total;
}

struct Kernel {
  float (*loop)(int64_t);
  int lanes;
  const char *isa;
};

Kernel chooseKernel() {
#if MIRAS_PEAK_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    return {fmaLoopAvx512, 16, "avx512f"};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return {fmaLoopAvx2, 8, "avx2+fma"};
#endif
  return {fmaLoopScalar, 1, "scalar"};
}

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Keeps the results alive so the loops are not optimised away.
std::atomic<float> sink{0.0f};

} // namespace

PeakResult measurePeakGflops(int threads, double seconds) {
  const Kernel kernel = chooseKernel();
  threads = std::max(threads, 1);
  const double flopsPerIteration = 2.0 * kAccumulators * kernel.lanes;

  // Calibrate on one thread: iterations for about a tenth of the budget per trial.
  int64_t iterations = 1 << 16;
  for (;;) {
    auto start = std::chrono::steady_clock::now();
    sink = sink + kernel.loop(iterations);
    double elapsed = secondsSince(start);
    if (elapsed > 0.01 || iterations > (int64_t(1) << 40)) {
      iterations = std::max<int64_t>(1, static_cast<int64_t>(iterations * (seconds / 5) / elapsed));
      break;
    }
    iterations *= 4;
  }

  // Best of three trials; in each, all threads start together and each times itself.
  double best = 0.0;
  for (int trial = 0; trial < 3; ++trial) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<double> gflops(threads, 0.0);
    auto work = [&](int index) {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire))
        std::this_thread::yield();
      auto start = std::chrono::steady_clock::now();
      float result = kernel.loop(iterations);
      double elapsed = secondsSince(start);
      sink = sink + result;
      gflops[index] = flopsPerIteration * static_cast<double>(iterations) / elapsed * 1e-9;
    };
    std::vector<std::thread> workers;
    for (int t = 1; t < threads; ++t)
      workers.emplace_back(work, t);
    while (ready.load() < threads - 1)
      std::this_thread::yield();
    go.store(true, std::memory_order_release);
    work(0);
    for (std::thread &w : workers)
      w.join();
    double total = 0.0;
    for (double g : gflops)
      total += g;
    best = std::max(best, total);
  }
  return {best, kernel.isa};
}

} // namespace miras::bench
