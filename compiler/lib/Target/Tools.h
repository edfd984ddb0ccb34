//===- Tools.h - Errors and external tools of the target stage --*- C++ -*-===//
#ifndef MIRAS_TARGET_TOOLS_H
#define MIRAS_TARGET_TOOLS_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"

#include <system_error>

#include <string>

namespace miras {

/// An error with `msg` (and, with `ec`, its message appended).
inline llvm::Error fail(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}
inline llvm::Error fail(const llvm::Twine &msg, std::error_code ec) {
  return llvm::createStringError(ec, msg + ": " + ec.message());
}

/// Runs `program args...` (args[0] is the program's name) with stdout and
/// stderr captured; unless it exits with status 0, returns an error naming
/// `what` ("C compiler", "ptxas") with the command line and its output.
llvm::Error runTool(llvm::StringRef what, llvm::StringRef program,
                    llvm::ArrayRef<std::string> args);

} // namespace miras

#endif
