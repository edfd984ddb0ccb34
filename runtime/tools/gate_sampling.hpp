// gate_sampling.hpp: the interval random gate values are drawn from, derived from the
// gate's declared range (miras_gate_info, `gate alpha : scalar in (0, 1];`). One rule
// for every tool: `miras bench` draws from it, and `miras info` prints it ("sample") so
// that the Python tests and the demo draw from the same interval without a table of
// their own.
//
// The rule:
//   * no declared range: [0.1, 0.9];
//   * a finite range at most kMaxSampleWidth wide: the range itself;
//   * otherwise (an unbounded end, or wider): the part of the range within 1 of its
//     point nearest 0, c = clamp(0, lo, hi): [max(lo, c - 1), min(hi, c + 1)]. So
//     (0, inf) draws from (0, 1], [1, inf) from [1, 2], (-inf, inf) from [-1, 1] and
//     [5, 1000] from [5, 6].
// Values are drawn uniformly; a draw on an open end of the declared range is drawn
// again, so every value lies in the declared range.
#ifndef MIRAS_TOOLS_GATE_SAMPLING_HPP
#define MIRAS_TOOLS_GATE_SAMPLING_HPP

#include <algorithm>

#include "miras/miras_abi.h"

namespace miras::cli {

// Wider finite ranges are not sampled whole: uniform draws over [0, 1000] would be
// decays or rates no model is run with.
constexpr double kMaxSampleWidth = 10.0;

struct SampleInterval {
  double lo, hi;
};

inline SampleInterval sampleInterval(const miras_gate_info &g) {
  if (!g.has_range)
    return {0.1, 0.9};
  const double lo = g.range_lo, hi = g.range_hi;
  if (hi - lo <= kMaxSampleWidth) // false for an infinite end (inf - x, or inf - inf = NaN)
    return {lo, hi};
  const double nearestZero = std::min(std::max(0.0, lo), hi);
  return {std::max(lo, nearestZero - 1.0), std::min(hi, nearestZero + 1.0)};
}

// Whether x lies in the declared range (always, without one).
inline bool inDeclaredRange(const miras_gate_info &g, double x) {
  if (!g.has_range)
    return true;
  bool aboveLo = g.range_lo_closed ? x >= g.range_lo : x > g.range_lo;
  bool belowHi = g.range_hi_closed ? x <= g.range_hi : x < g.range_hi;
  return aboveLo && belowHi;
}

} // namespace miras::cli

#endif // MIRAS_TOOLS_GATE_SAMPLING_HPP
