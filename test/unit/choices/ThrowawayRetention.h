//===- ThrowawayRetention.h - A retention defined by a test only -*- C++ -*-===//
#ifndef MIRAS_TEST_THROWAWAYRETENTION_H
#define MIRAS_TEST_THROWAWAYRETENTION_H

namespace miras::test {
/// Registers `norm_ball` (ThrowawayRetention.cpp); false if it already is.
bool registerNormBallRetention();
} // namespace miras::test

#endif
