// npy.hpp: reading and writing NumPy .npy files as miras::Tensor.
//
// Supported: format versions 1.0 and 2.0, C order, little-endian float32 ('<f4');
// float64 ('<f8') is read and rounded to float32 because NumPy's default dtype is
// float64. Everything else (Fortran order, other dtypes, truncated data) is rejected
// with an Error(MIRAS_ERR_IO) whose message names the file and the problem.
#ifndef MIRAS_NPY_HPP
#define MIRAS_NPY_HPP

#include <string>
#include <utility>
#include <vector>

#include "miras/runtime.hpp"

namespace miras {

MIRAS_RUNTIME_API Tensor readNpy(const std::string &path);

// Writes version 1.0, '<f4'. The data goes to a temporary file in the same directory
// that is renamed over `path` only once complete, so a failure never leaves a partial
// file where a good one was.
MIRAS_RUNTIME_API void writeNpy(const std::string &path, const Tensor &tensor);

// Writes several files into `dir` (created if missing) as one unit: every tensor goes
// to a temporary file there first; only when all were written are they moved into
// place, each exchanged with the file it replaces, so that a failure at any point puts
// the old files back (the directory is left as it was). A target that exists but is
// not a regular file fails before anything is written. Writers into one directory are
// serialised by an exclusive flock on the directory, so two concurrent calls never
// leave files of both; readers that take no lock may still see a set half replaced.
// `files`: file name (e.g. "o.npy") -> tensor.
MIRAS_RUNTIME_API void writeNpyFiles(
    const std::string &dir, const std::vector<std::pair<std::string, const Tensor *>> &files);

} // namespace miras

#endif // MIRAS_NPY_HPP
