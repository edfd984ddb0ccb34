// peak.hpp: the machine's measured fp32 peak (FMA throughput), the denominator of
// `miras bench`'s "fraction of peak".
#ifndef MIRAS_TOOLS_BENCH_PEAK_HPP
#define MIRAS_TOOLS_BENCH_PEAK_HPP

namespace miras::bench {

struct PeakResult {
  double gflops = 0.0;   // summed over the threads, best of a few trials
  const char *isa = "";  // "avx512f", "avx2+fma" or "scalar"
};

// Runs an FMA-only kernel on `threads` threads at once and sums their GFLOP/s.
// Takes about `seconds` of wall time.
PeakResult measurePeakGflops(int threads, double seconds = 0.6);

} // namespace miras::bench

#endif // MIRAS_TOOLS_BENCH_PEAK_HPP
