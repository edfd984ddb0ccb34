//===- Tools.h - External tools the target stage runs -----------*- C++ -*-===//
#ifndef MIRAS_TARGET_TOOLS_H
#define MIRAS_TARGET_TOOLS_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <string>

namespace miras {

/// Runs `program args...` (args[0] is the program's name) with stdout and
/// stderr captured; unless it exits with status 0, returns an error naming
/// `what` ("C compiler", "ptxas") with the command line and its output.
llvm::Error runTool(llvm::StringRef what, llvm::StringRef program,
                    llvm::ArrayRef<std::string> args);

} // namespace miras

#endif
