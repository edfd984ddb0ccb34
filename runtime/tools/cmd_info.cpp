// cmd_info.cpp: `miras info lib.so` prints a module's metadata as JSON.
#include <cstdio>

#include "commands.hpp"
#include "metadata_json.hpp"
#include "miras/runtime.hpp"

namespace miras::cli {

const char kInfoHelp[] =
    "usage: miras info <lib.so>\n"
    "\n"
    "Print the metadata of a compiled module as JSON on stdout: name, source, compiler,\n"
    "abi_version, dk, dv, chunk, steps, algorithm, flops_per_token, read, params, gates, states, targets,\n"
    "backward_segment (0: built without --backward; else the backward's segment length),\n"
    "backward_flops_per_token (0 without a backward; else the work of its reverse step plus\n"
    "one recompute of the state update per token and head, counted as flops_per_token),\n"
    "cuda and rule. cuda is null unless the module was built with --target=cuda or cpu,cuda;\n"
    "then it holds the kernels' architecture (arch), whether a cubin is embedded and its\n"
    "size (cubin, cubin_bytes), the PTX size (ptx_bytes), the entry names for float32 and\n"
    "bfloat16 inputs (kernel_f32, kernel_bf16) and the launch shape (block_threads,\n"
    "shared_bytes per block, workspace_bytes per (batch, head) pair). cuda_backward is the\n"
    "same for the backward's kernel (--backward with a cuda target; kernel_bf16 null), or null.\n"
    "\n"
    "Each gate has its declared range (the .miras file's `in (lo, hi]`) as range: null\n"
    "when none is declared, else {text, lo, hi, lo_closed, hi_closed} with text in interval\n"
    "notation (\"(0, 1]\", \"[1, inf)\") and lo / hi null for an unbounded end; and sample,\n"
    "the [lo, hi] that `miras bench` and the tests draw the gate from: the range itself\n"
    "when finite and at most 10 wide, else its part within 1 of its point nearest 0;\n"
    "[0.1, 0.9] without a range (a draw on an open end is drawn again).\n";

int runInfo(const Args &args) {
  if (args.size() != 1 || args[0].rfind("-", 0) == 0)
    throw UsageError("usage: miras info <lib.so>");
  Library lib = Library::open(args[0]);
  std::fputs(metadataJson(lib.metadata()).c_str(), stdout);
  return 0;
}

} // namespace miras::cli
