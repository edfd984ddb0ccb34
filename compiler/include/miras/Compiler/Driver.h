//===- Driver.h - The mirasc driver -----------------------------*- C++ -*-===//
#ifndef MIRAS_COMPILER_DRIVER_H
#define MIRAS_COMPILER_DRIVER_H

namespace miras {

/// Runs `mirasc` with its command line; returns the process exit code.
int runMirasc(int argc, char **argv);

} // namespace miras

#endif
