// The rule that turns a gate's declared range into the interval `miras bench` and the
// tests draw it from (runtime/tools/gate_sampling.hpp), case by case.
#include <cmath>

#include <gtest/gtest.h>

#include "gate_sampling.hpp"

namespace {

using miras::cli::inDeclaredRange;
using miras::cli::sampleInterval;

miras_gate_info ranged(double lo, double hi, bool loClosed, bool hiClosed) {
  miras_gate_info g{};
  g.name = "g";
  g.has_range = 1;
  g.range_lo = lo;
  g.range_hi = hi;
  g.range_lo_closed = loClosed;
  g.range_hi_closed = hiClosed;
  return g;
}

void expectInterval(const miras_gate_info &g, double lo, double hi) {
  miras::cli::SampleInterval s = sampleInterval(g);
  EXPECT_EQ(s.lo, lo);
  EXPECT_EQ(s.hi, hi);
}

TEST(GateSampling, NoRangeDrawsFromTheDefault) {
  miras_gate_info g{};
  expectInterval(g, 0.1, 0.9);
  EXPECT_TRUE(inDeclaredRange(g, -5.0));
}

TEST(GateSampling, FiniteRangeIsSampledWhole) {
  expectInterval(ranged(0.85, 1.0, true, true), 0.85, 1.0);
  expectInterval(ranged(0.0005, 0.002, true, true), 0.0005, 0.002);
  expectInterval(ranged(-4.0, 6.0, false, false), -4.0, 6.0); // exactly 10 wide
}

TEST(GateSampling, UnboundedOrWideRangeTakesTheUnitPartNearestZero) {
  const double inf = HUGE_VAL;
  expectInterval(ranged(0.0, inf, false, false), 0.0, 1.0);
  expectInterval(ranged(1.0, inf, true, false), 1.0, 2.0);
  expectInterval(ranged(-inf, inf, false, false), -1.0, 1.0);
  expectInterval(ranged(-inf, -3.0, false, true), -4.0, -3.0);
  expectInterval(ranged(5.0, 1000.0, true, true), 5.0, 6.0);
  expectInterval(ranged(-100.0, 100.0, true, true), -1.0, 1.0);
  expectInterval(ranged(-0.5, 20.0, true, true), -0.5, 1.0);
}

TEST(GateSampling, OpenEndsAreOutside) {
  miras_gate_info g = ranged(0.0, 1.0, false, true);
  EXPECT_FALSE(inDeclaredRange(g, 0.0));
  EXPECT_TRUE(inDeclaredRange(g, 1e-30));
  EXPECT_TRUE(inDeclaredRange(g, 1.0));
  EXPECT_FALSE(inDeclaredRange(g, 1.0000001));
  g.range_lo_closed = 1;
  g.range_hi_closed = 0;
  EXPECT_TRUE(inDeclaredRange(g, 0.0));
  EXPECT_FALSE(inDeclaredRange(g, 1.0));
}

} // namespace
