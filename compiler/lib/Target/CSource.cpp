//===- CSource.cpp - Generated <name>.h and ABI glue C source -------------===//
//
// Text generation only: no LLVM/MLIR IR here. The glue is plain C99 (plus the
// GCC/Clang builtins __builtin_mul_overflow and visibility attributes) so any
// system C compiler on the host can build it.
//
//===----------------------------------------------------------------------===//

#include "miras/Compiler/Target.h"
#include "miras/Dialect/Miras/IR/StepSignature.h"
#include "Tools.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <cstdlib>
#include <set>

using namespace llvm;

namespace miras {
namespace {

// miras_abi.h, embedded at build time (see CMakeLists.txt) so the generated
// header can never drift from the runtime's copy.
const char *const kAbiHeaderText =
#include "MirasAbiHeader.inc"
    ;

constexpr int kMaxStateRank = 4; // MIRAS_MAX_STATE_RANK in miras_abi.h
constexpr const char *kCompilerId = "mirasc 0.1";

bool isCIdentifier(StringRef s) {
  if (s.empty() || isDigit(s.front()))
    return false;
  return all_of(s, [](char c) { return isAlnum(c) || c == '_'; });
}

bool isCKeyword(StringRef s) {
  static const StringSet<> keywords = {
      "auto",     "break",    "case",     "char",     "const",    "continue",
      "default",  "do",       "double",   "else",     "enum",     "extern",
      "float",    "for",      "goto",     "if",       "inline",   "int",
      "long",     "register", "restrict", "return",   "short",    "signed",
      "sizeof",   "static",   "struct",   "switch",   "typedef",  "union",
      "unsigned", "void",     "volatile", "while",    "_Bool",    "_Complex",
      "bool",     "true",     "false",    "NULL",     "alignas",  "alignof",
      "nullptr",  "typeof",   "class",    "this",     "new",      "delete"};
  return keywords.contains(s);
}

/// A C string literal with the exact bytes of `s`. Octal escapes are always 3
/// digits so a following digit cannot extend them; '?' is escaped against
/// trigraphs.
std::string cString(StringRef s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
    case '"':  out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '?':  out += "\\?"; break;
    case '\n': out += "\\n"; break;
    case '\t': out += "\\t"; break;
    default:
      if (c >= 0x20 && c < 0x7f) {
        out += static_cast<char>(c);
      } else {
        char buf[5];
        snprintf(buf, sizeof buf, "\\%03o", c);
        out += buf;
      }
    }
  }
  return out + "\"";
}

/// Text safe inside a one-line /* */ comment: no comment terminator, no
/// nested opener, no line breaks.
std::string commentText(StringRef s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    out += s[i] == '\n' || s[i] == '\r' ? ' ' : s[i];
    if ((s[i] == '*' && i + 1 < s.size() && s[i + 1] == '/') ||
        (s[i] == '/' && i + 1 < s.size() && s[i + 1] == '*'))
      out += ' ';
  }
  return out;
}

/// A double as a C expression that round-trips exactly.
std::string cDouble(double v) {
  if (std::isnan(v))
    return "NAN";
  if (std::isinf(v))
    return v > 0 ? "HUGE_VAL" : "(-HUGE_VAL)";
  std::string s;
  raw_string_ostream(s) << format("%.17g", v);
  if (StringRef(s).find_first_of(".eE") == StringRef::npos)
    s += ".0";
  return s;
}

/// A gate range in the interval notation of the .miras file, `(0, 1]`.
std::string rangeText(const KernelInterface::Gate::Range &r) {
  auto end = [](double x) {
    if (std::isinf(x))
      return std::string(x < 0 ? "-inf" : "inf");
    // The shortest spelling that reads back as x (0.05, not 0.050000000000000003).
    std::string s;
    for (int digits = 1; digits <= 17; ++digits) {
      s.clear();
      raw_string_ostream(s) << format("%.*g", digits, x);
      if (std::strtod(s.c_str(), nullptr) == x)
        break;
    }
    return s;
  };
  return (r.loClosed ? "[" : "(") + end(r.lo) + ", " + end(r.hi) + (r.hiClosed ? "]" : ")");
}

std::string joinInts(ArrayRef<int64_t> values) {
  std::string s;
  for (auto [i, v] : enumerate(values))
    s += (i ? ", " : "") + std::to_string(v);
  return s;
}

/// Everything both generators derive from the interface: the C parameter
/// names of <name>_forward_explicit and each tensor's shape.
struct Tensor {
  std::string cName;          // parameter name in <name>_forward_explicit
  std::string shapeText;      // "[B, T, H, 64]"
  std::vector<std::string> sizes; // C expressions of the sizes
  std::string role;           // doc comment
};

struct Layout {
  Tensor q, k, v, o;
  std::vector<Tensor> gates;
  std::vector<Tensor> statesIn, statesOut;
};

Tensor makeTensor(std::string cName, std::vector<std::string> sizes,
                  std::string role) {
  Tensor t{std::move(cName), "[", std::move(sizes), std::move(role)};
  for (auto [i, s] : enumerate(t.sizes))
    t.shapeText += (i ? ", " : "") + s;
  t.shapeText += "]";
  return t;
}

Layout computeLayout(const KernelInterface &iface) {
  // User names become C parameter names; keep them readable but never let
  // them collide with each other, the fixed parameters or C keywords.
  StringSet<> used = {"B", "T", "H", "q", "k", "v", "o"};
  auto unique = [&](std::string name) {
    std::string s;
    for (char c : name)
      s += isAlnum(c) || c == '_' ? c : '_';
    if (s.empty() || isDigit(s.front()))
      s = "_" + s;
    while (isCKeyword(s) || used.contains(s) || StringRef(s).starts_with("miras_"))
      s += "_";
    used.insert(s);
    return s;
  };
  auto btx = [](int64_t d) {
    return std::vector<std::string>{"B", "T", "H", std::to_string(d)};
  };
  Layout l;
  l.q = makeTensor("q", btx(iface.dk), "queries");
  // A multistep module takes one (k, v) pair per step.
  auto perStep = [&](int64_t d) {
    if (iface.steps <= 1)
      return btx(d);
    return std::vector<std::string>{"B", "T", "H", std::to_string(iface.steps),
                                    std::to_string(d)};
  };
  l.k = makeTensor("k", perStep(iface.dk), "keys");
  l.v = makeTensor("v", perStep(iface.dv), "values");
  for (const auto &g : iface.gates) {
    auto sizes = g.channel   ? btx(g.dim)
                 : g.perStep ? btx(iface.steps)
                             : std::vector<std::string>{"B", "T", "H"};
    l.gates.push_back(makeTensor(
        unique(g.name), std::move(sizes),
        (g.channel ? "channel gate `" + g.name + "` along " + g.axis
                   : "scalar gate `" + g.name + "`") +
            (g.range ? " in " + rangeText(*g.range) : std::string())));
  }
  for (const auto &s : iface.states) {
    std::vector<std::string> sizes{"B", "H"};
    for (int64_t d : s.shape)
      sizes.push_back(std::to_string(d));
    l.statesIn.push_back(makeTensor(unique(s.name + "_in"), sizes,
                                    "initial state `" + s.name +
                                        "` (NULL: zeros; may equal " +
                                        s.name + "_out)"));
    l.statesOut.push_back(makeTensor(unique(s.name + "_out"), sizes,
                                     "final state `" + s.name + "`"));
  }
  l.o = makeTensor("o", btx(iface.dv), "output");
  return l;
}

std::string explicitSignature(const KernelInterface &iface, const Layout &l) {
  std::string s = "int32_t " + iface.moduleName +
                  "_forward_explicit(\n    int64_t B, int64_t T, int64_t H, "
                  "const float *q, const float *k, const float *v";
  for (const auto &g : l.gates)
    s += ",\n    const float *" + g.cName;
  for (size_t i = 0; i < l.statesIn.size(); ++i)
    s += ",\n    const float *" + l.statesIn[i].cName + ", float *" +
         l.statesOut[i].cName;
  return s + ",\n    float *o)";
}

} // namespace

Error validateInterface(const KernelInterface &iface) {
  const std::string &n = iface.moduleName;
  if (!isCIdentifier(n) || isCKeyword(n))
    return fail("module name '" + n + "' is not a valid C identifier");
  if (iface.dk <= 0 || iface.dv <= 0)
    return fail("module '" + n + "': dk and dv must be positive (got " +
                Twine(iface.dk) + ", " + Twine(iface.dv) + ")");
  if (iface.chunk <= 0 || iface.steps <= 0)
    return fail("module '" + n + "': chunk and steps must be positive");
  StringSet<> params, gates, states;
  for (const auto &p : iface.params)
    if (p.name.empty() || !params.insert(p.name).second)
      return fail("module '" + n + "': empty or duplicate param '" + p.name + "'");
  for (const auto &g : iface.gates) {
    if (g.name.empty() || !gates.insert(g.name).second)
      return fail("module '" + n + "': empty or duplicate gate '" + g.name + "'");
    if (const auto &r = g.range) {
      bool infiniteClosed =
          (std::isinf(r->lo) && r->loClosed) || (std::isinf(r->hi) && r->hiClosed);
      if (std::isnan(r->lo) || std::isnan(r->hi) || r->lo > r->hi || infiniteClosed ||
          (r->lo == r->hi && !(r->loClosed && r->hiClosed)))
        return fail("gate '" + g.name + "': range " + rangeText(*r) +
                    " is empty or malformed");
    }
    if (!g.channel) {
      if (g.dim != 1)
        return fail("scalar gate '" + g.name + "' must have dim 1");
      continue;
    }
    int64_t expect = g.axis == "dk" ? iface.dk : g.axis == "dv" ? iface.dv : -1;
    if (expect < 0)
      return fail("channel gate '" + g.name + "': axis must be \"dk\" or \"dv\"");
    if (g.dim != expect)
      return fail("channel gate '" + g.name + "': dim " + Twine(g.dim) +
                  " does not match " + g.axis + " = " + Twine(expect));
  }
  if (iface.hasTarget("cuda") != iface.cuda.has_value())
    return fail("module '" + n + "': the cuda target and the CUDA kernels "
                "must come together");
  if ((iface.hasTarget("cuda") && iface.backwardSegment > 0) !=
      iface.cudaBackward.has_value())
    return fail("module '" + n + "': a backward for the cuda target and its CUDA "
                "kernel must come together");
  for (const auto *kernels : {&iface.cuda, &iface.cudaBackward})
    if (*kernels && ((*kernels)->ptx.empty() || (*kernels)->blockThreads < 1 ||
                     (*kernels)->blockThreads > 1024))
      return fail("module '" + n + "': CUDA kernels without PTX or with " +
                  Twine((*kernels)->blockThreads) + " threads per block");
  if (!iface.hasTarget("cpu") && !iface.hasTarget("cuda"))
    return fail("module '" + n + "': no target");
  for (const auto &s : iface.states) {
    if (s.name.empty() || !states.insert(s.name).second)
      return fail("module '" + n + "': empty or duplicate state '" + s.name + "'");
    if (s.shape.empty() || s.shape.size() > kMaxStateRank)
      return fail("state '" + s.name + "': rank must be 1.." + Twine(kMaxStateRank));
    if (any_of(s.shape, [](int64_t d) { return d <= 0; }))
      return fail("state '" + s.name + "': shape must be positive");
  }
  return Error::success();
}

std::string generateHeader(const KernelInterface &iface) {
  const std::string &n = iface.moduleName;
  Layout l = computeLayout(iface);
  std::string guard = "MIRAS_MODULE_" + StringRef(n).upper() + "_H";
  std::string s;
  raw_string_ostream os(s);
  os << "/* " << n << ".h: generated by " << kCompilerId
     << (iface.sourcePath.empty() ? "" : " from " + commentText(iface.sourcePath))
     << ". Do not edit. */\n"
     << "#ifndef " << guard << "\n#define " << guard << "\n\n"
     << kAbiHeaderText << "\n"
     << "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n";

  os << "/*\n * Module " << n << ": Dk = " << iface.dk << ", Dv = " << iface.dv
     << ", chunk = " << iface.chunk << ", "
     << (iface.readAfterWrite ? "read after write" : "read before write")
     << ", targets: " << commentText(join(iface.targets, ",")) << ".\n";
  if (!iface.params.empty()) {
    os << " * Parameters:";
    for (const auto &p : iface.params)
      os << " " << commentText(p.name) << " = " << cDouble(p.value) << ";";
    os << "\n";
  }
  SmallVector<StringRef> ruleLines;
  StringRef(iface.rule).split(ruleLines, '\n', -1, /*KeepEmpty=*/false);
  if (!ruleLines.empty())
    os << " * Update rule:\n";
  for (StringRef line : ruleLines)
    os << " *   " << commentText(line.rtrim()) << "\n";
  os << " *\n * Tensors (C-contiguous float32; B batch, T length, H heads):\n";
  auto row = [&](const Tensor &t) {
    os << " *   " << left_justify(t.cName, 10) << " "
       << left_justify(t.shapeText, 18) << " " << commentText(t.role) << "\n";
  };
  row(l.q), row(l.k), row(l.v);
  for (const auto &g : l.gates)
    row(g);
  for (size_t i = 0; i < l.statesIn.size(); ++i)
    row(l.statesIn[i]), row(l.statesOut[i]);
  row(l.o);
  os << " *\n * " << n << "_forward takes the same tensors through miras_forward_args "
     << "(gates, state_in and\n * state_out in the order above). Both return MIRAS_OK "
     << "or a miras_status error code.\n */\n"
     << "const miras_module_metadata *" << n << "_metadata(void);\n";
  if (iface.hasTarget("cpu"))
    os << "int32_t " << n << "_forward(const miras_forward_args *args);\n"
       << "/* Only the (batch, head) pairs begin <= b * H + h < end; disjoint ranges may run\n"
       << " * concurrently (see miras_module_entry.forward_range). */\n"
       << "int32_t " << n
       << "_forward_range(const miras_forward_args *args, int64_t begin, int64_t end);\n"
       << explicitSignature(iface, l) << ";\n";
  if (iface.hasTarget("cpu") && iface.backwardSegment > 0)
    os << "/* The backward pass (mirasc --backward, segment S = " << iface.backwardSegment
       << "): the adjoints of every\n * input given d_o and the final states' adjoints "
       << "(miras_backward_args). */\n"
       << "int32_t " << n << "_backward(const miras_backward_args *args);\n"
       << "int32_t " << n
       << "_backward_range(const miras_backward_args *args, int64_t begin, int64_t end);\n";
  if (!iface.hasTarget("cpu"))
    os << "/* Built for cuda only: the kernels are in " << n
       << "_metadata()->cuda, run them with\n * the miras runtime "
          "(miras_library_forward_on, miras_library_forward_cuda). */\n";
  os << "\n#ifdef __cplusplus\n}\n#endif\n\n#endif /* " << guard << " */\n";
  return s;
}

/// The miras_cuda_binary table `<prefix>_table`: PTX as a string, the cubin as
/// bytes (the forward's miras_cuda, the backward's miras_cuda_backward).
static void emitCudaTable(raw_ostream &os, const KernelInterface::CudaKernels &cuda,
                          StringRef prefix) {
  os << "\n/* CUDA kernels (miras_abi.h, miras_cuda_binary). */\n"
     << "static const char " << prefix << "_ptx[] =";
  // One literal per PTX line: readable, and far below any compiler's limit.
  StringRef rest = cuda.ptx;
  do {
    size_t end = std::min(rest.find('\n'), rest.size() - 1) + 1;
    os << "\n  " << cString(rest.take_front(end).str());
    rest = rest.drop_front(end);
  } while (!rest.empty());
  os << ";\n";
  if (!cuda.cubin.empty()) {
    os << "static const unsigned char " << prefix << "_cubin[" << cuda.cubin.size() << "] = {";
    for (size_t i = 0; i < cuda.cubin.size(); ++i)
      os << (i % 16 ? "" : "\n  ") << static_cast<unsigned>(
                                          static_cast<unsigned char>(cuda.cubin[i]))
         << ",";
    os << "\n};\n";
  }
  os << "static const miras_cuda_binary " << prefix << "_table = {\n  " << cString(cuda.arch)
     << ", " << prefix << "_ptx, "
     << (cuda.cubin.empty() ? std::string("NULL, 0")
                            : (prefix + "_cubin, ").str() + std::to_string(cuda.cubin.size()))
     << ",\n  " << cString(cuda.kernelF32) << ", "
     << (cuda.kernelBF16.empty() ? std::string("NULL") : cString(cuda.kernelBF16)) << ",\n  "
     << cuda.blockThreads << ", " << cuda.sharedBytes << ", " << cuda.workspaceBytes
     << "};\n";
}

/// <name>_forward_range, <name>_forward and <name>_forward_explicit (CPU
/// target): validation, state copy, memref descriptors, the kernel call.
/// A memref descriptor `var` of `t` over `ptr`, and the check that its shape is
/// contiguous (its element count into `countVar`); the forward and backward glue
/// check every tensor this way before anything is written.
static void emitDescriptor(raw_ostream &os, StringRef var, const Tensor &t,
                           StringRef ptr, StringRef countVar) {
  size_t r = t.sizes.size();
  os << "  miras_memref" << r << " " << var << " = {(float *)" << ptr << ", (float *)"
     << ptr << ", 0, {" << join(t.sizes, ", ") << "}, {0}};\n"
     << "  if (!miras_contiguous(" << r << ", " << var << ".sizes, " << var
     << ".strides, &" << countVar << ")) return MIRAS_ERR_SHAPE;\n";
}

/// The checks every `_range` entry point starts with: args, B, T, H and the pair
/// range [begin, end) (an empty range does nothing).
static void emitRangePrologue(raw_ostream &os) {
  os << "  if (args == NULL) return MIRAS_ERR_NULL_POINTER;\n"
     << "  const int64_t B = args->batch, T = args->length, H = args->heads;\n"
     << "  if (B <= 0 || T <= 0 || H <= 0) return MIRAS_ERR_SHAPE;\n"
     << "  int64_t pairs;\n"
     << "  if (__builtin_mul_overflow(B, H, &pairs)) return MIRAS_ERR_SHAPE;\n"
     << "  if (begin < 0 || begin > end || end > pairs) return "
        "MIRAS_ERR_INVALID_ARGUMENT;\n"
     << "  if (begin == end) return MIRAS_OK;\n";
}

/// `args->array` and each of its `size` entries must be non-NULL (nothing to check
/// for an empty array).
static void emitNonNullArray(raw_ostream &os, StringRef array, size_t size) {
  if (size == 0)
    return;
  os << "  if (args->" << array << " == NULL) return MIRAS_ERR_NULL_POINTER;\n";
  for (size_t i = 0; i < size; ++i)
    os << "  if (args->" << array << "[" << i << "] == NULL) return MIRAS_ERR_NULL_POINTER;\n";
}

/// Descriptors `<prefix>q`, `<prefix>k`, `<prefix>v`, `<prefix>g<i>` of the token
/// inputs, each shape checked.
static void emitTokenInputs(raw_ostream &os, const Layout &l, StringRef prefix) {
  std::string p = prefix.str();
  emitDescriptor(os, p + "q", l.q, "args->q", "count");
  emitDescriptor(os, p + "k", l.k, "args->k", "count");
  emitDescriptor(os, p + "v", l.v, "args->v", "count");
  for (size_t i = 0; i < l.gates.size(); ++i)
    emitDescriptor(os, p + "g" + std::to_string(i), l.gates[i],
                   "args->gates[" + std::to_string(i) + "]", "count");
}

/// Copies pairs [begin, begin + pairs) of `args->from[i]` (NULL array or entry:
/// zeros) into `args->to[i]`, the buffer the kernel then updates in place: states
/// are [B, H, ...], so a range of pairs is one contiguous block. memmove: the caller
/// may pass overlapping buffers. `n_s<i>` holds the tensor's element count.
static void emitSeedRange(raw_ostream &os, size_t i, StringRef from, StringRef to,
                          StringRef first, StringRef pairs) {
  std::string idx = std::to_string(i);
  os << "  {\n    const size_t per_pair = (size_t)(n_s" << idx << " / pairs);\n"
     << "    const float *src = args->" << from << " ? args->" << from << "[" << idx
     << "] : NULL;\n    float *dst = args->" << to << "[" << idx
     << "] + (size_t)" << first << " * per_pair;\n"
     << "    size_t bytes = (size_t)" << pairs << " * per_pair * sizeof(float);\n"
     << "    if (src == NULL) memset(dst, 0, bytes);\n"
     << "    else if (src + (size_t)" << first << " * per_pair != dst) "
        "memmove(dst, src + (size_t)" << first << " * per_pair, bytes);\n  }\n";
}

/// The number of MIRAS_STATE_CARRIED states: they come first, and only they
/// have checkpoints and segments.
static size_t numCarried(const KernelInterface &iface) {
  return static_cast<size_t>(llvm::count_if(iface.states, [](const auto &st) {
    return st.role == KernelInterface::State::Role::Carried;
  }));
}

/// The index of the chunk position among the states, or -1 (chunk 1).
static int chunkPositionIndex(const KernelInterface &iface) {
  for (auto [i, st] : enumerate(iface.states))
    if (st.role == KernelInterface::State::Role::ChunkPosition)
      return static_cast<int>(i);
  return -1;
}

/// A given chunk position (state `index` of `array`) must hold, for every pair
/// in [begin, end), an integer 0 <= p < C (miras_abi.h miras_state_role):
/// checked before anything is written.
static void emitChunkPositionCheck(raw_ostream &os, const KernelInterface &iface,
                                   StringRef array) {
  int index = chunkPositionIndex(iface);
  if (index < 0)
    return;
  os << "  if (args->" << array << " && args->" << array << "[" << index << "]) {\n"
     << "    const float *p = args->" << array << "[" << index << "];\n"
     << "    for (int64_t i = begin; i < end; ++i)\n"
     << "      if (!(p[i] >= 0.0f && p[i] < " << iface.chunk
     << ".0f) || p[i] != (float)(int64_t)p[i])\n"
     << "        return MIRAS_ERR_INVALID_ARGUMENT;\n  }\n";
}

/// The kernels run with subnormal floats flushed to zero (FTZ and DAZ on
/// x86, FZ on AArch64), the caller's mode restored after: a decaying state
/// (a retention gate below 1, thousands of tokens) reaches the subnormal
/// range, where x86 computes about a hundred times slower. The flushed values
/// are below 1.2e-38 in magnitude.
static void emitFloatMode(raw_ostream &os) {
  os << "#if defined(__x86_64__) || defined(__i386__)\n"
        "#include <xmmintrin.h>\n"
        "typedef unsigned int miras_float_mode;\n"
        "static miras_float_mode miras_float_mode_enter(void) {\n"
        "  miras_float_mode mode = _mm_getcsr();\n"
        "  _mm_setcsr(mode | 0x8040u); /* FTZ | DAZ */\n"
        "  return mode;\n}\n"
        "static void miras_float_mode_leave(miras_float_mode mode) { "
        "_mm_setcsr(mode); }\n"
        "#elif defined(__aarch64__)\n"
        "typedef uint64_t miras_float_mode;\n"
        "static miras_float_mode miras_float_mode_enter(void) {\n"
        "  miras_float_mode mode;\n"
        "  __asm__ volatile(\"mrs %0, fpcr\" : \"=r\"(mode));\n"
        "  __asm__ volatile(\"msr fpcr, %0\" : : \"r\"(mode | (1ull << 24))); "
        "/* FZ */\n"
        "  return mode;\n}\n"
        "static void miras_float_mode_leave(miras_float_mode mode) {\n"
        "  __asm__ volatile(\"msr fpcr, %0\" : : \"r\"(mode));\n}\n"
        "#else\n"
        "typedef int miras_float_mode;\n"
        "static miras_float_mode miras_float_mode_enter(void) { return 0; }\n"
        "static void miras_float_mode_leave(miras_float_mode mode) { (void)mode; }\n"
        "#endif\n\n";
}

/// The forward kernel's call over pairs `range` ("begin, end") on the
/// descriptors `<prefix>q`, `<prefix>k`, ..., in KernelLayout's order
/// (StepSignature.h).
static void emitKernelCall(raw_ostream &os, const std::string &n, const Layout &l,
                           StringRef range, StringRef prefix) {
  os << "_mlir_ciface_" << n << "_kernel(" << range << ", &" << prefix << "q, &" << prefix
     << "k, &" << prefix << "v";
  for (size_t i = 0; i < l.gates.size(); ++i)
    os << ", &" << prefix << "g" << i;
  for (size_t i = 0; i < l.statesOut.size(); ++i)
    os << ", &" << prefix << "s" << i;
  os << ", &" << prefix << "o);\n";
}

/// The forward with checkpoints (miras_forward_args.checkpoints, a library
/// with a backward): validates them and allocates, before anything is
/// written, the pair's states in `scratch` (64-byte aligned, so the kernel
/// sweeps them where they are).
static void emitCheckpointScratch(raw_ostream &os, const KernelInterface &iface,
                                  const Layout &l) {
  const size_t numStates = l.statesOut.size();
  os << "  float *scratch[" << std::max<size_t>(numStates, 1) << "] = {NULL};\n"
     << "  if (args->checkpoints != NULL) {\n";
  for (size_t i = 0; i < numCarried(iface); ++i)
    os << "    if (args->checkpoints[" << i << "] == NULL) return MIRAS_ERR_NULL_POINTER;\n";
  os << "    int failed = 0;\n";
  for (size_t i = 0; i < numStates; ++i)
    os << "    failed |= (scratch[" << i << "] = miras_alloc_floats(n_s" << i
       << " / pairs)) == NULL;\n";
  os << "    if (failed) {\n      for (int i = 0; i < " << numStates
     << "; ++i) free(scratch[i]);\n      return MIRAS_ERR_ALLOC;\n    }\n  }\n";
}

/// Runs the pairs [begin, end) with `state_out` seeded, saving checkpoints:
/// pair by pair, its states in `scratch`, the sequence as calls of the kernel
/// that end where a segment does (u = p + t a multiple of S; exact
/// continuation: the same numbers as one call), each over a view of the
/// pair's tokens (B = H = 1, the caller's strides), the carried states
/// copied out between calls.
static void emitCheckpointedForward(raw_ostream &os, const KernelInterface &iface,
                                    const Layout &l) {
  const std::string &n = iface.moduleName;
  const size_t numStates = l.statesOut.size();
  const int position = chunkPositionIndex(iface);
  os << "    const int64_t S = " << iface.backwardSegment << ";\n"
     << "    const int64_t N = MIRAS_CHECKPOINTS(T, " << iface.chunk << ", S);\n"
     << "    for (int64_t pair = begin; pair < end; ++pair) {\n"
     << "      const int64_t bi = pair / H, hi = pair % H;\n";
  for (size_t i = 0; i < numStates; ++i)
    os << "      const size_t n" << i << " = (size_t)(n_s" << i << " / pairs);\n"
       << "      memcpy(scratch[" << i << "], args->state_out[" << i
       << "] + (size_t)pair * n" << i << ", n" << i << " * sizeof(float));\n";
  auto saveCheckpoint = [&](StringRef slot) {
    for (size_t i = 0; i < numCarried(iface); ++i)
      os << "        memcpy(args->checkpoints[" << i << "] + ((size_t)pair * (size_t)N + (size_t)("
         << slot << ")) * n" << i << ", scratch[" << i << "], n" << i
         << " * sizeof(float));\n";
  };
  os << "      int64_t t = 0, u = "
     << (position < 0 ? std::string("0")
                      : "(int64_t)scratch[" + std::to_string(position) + "][0] % " +
                            std::to_string(iface.chunk))
     << ";\n      {\n";
  saveCheckpoint("0");
  os << "      }\n      while (t < T) {\n"
     << "        const int64_t len = S - u % S < T - t ? S - u % S : T - t;\n";
  // One pair's tokens [t, t + len) of a [B, T, H, ...] tensor.
  std::vector<std::pair<std::string, size_t>> tokens = {
      {"q", l.q.sizes.size()}, {"k", l.k.sizes.size()}, {"v", l.v.sizes.size()}};
  for (size_t i = 0; i < l.gates.size(); ++i)
    tokens.push_back({"g" + std::to_string(i), l.gates[i].sizes.size()});
  tokens.push_back({"o", l.o.sizes.size()});
  for (auto &[name, rank] : tokens)
    os << "        miras_memref" << rank << " v_" << name << " = d_" << name << ";\n"
       << "        v_" << name << ".aligned = d_" << name << ".aligned + bi * d_" << name
       << ".strides[0] + t * d_" << name << ".strides[1] + hi * d_" << name
       << ".strides[2];\n"
       << "        v_" << name << ".allocated = v_" << name << ".aligned;\n"
       << "        v_" << name << ".sizes[0] = 1; v_" << name << ".sizes[1] = len; v_"
       << name << ".sizes[2] = 1;\n";
  for (size_t i = 0; i < numStates; ++i) {
    size_t rank = l.statesOut[i].sizes.size();
    os << "        miras_memref" << rank << " v_s" << i << " = d_s" << i << ";\n"
       << "        v_s" << i << ".allocated = v_s" << i << ".aligned = scratch[" << i
       << "];\n        v_s" << i << ".sizes[0] = v_s" << i << ".sizes[1] = 1;\n"
       << "        v_s" << i << ".strides[0] = v_s" << i << ".strides[1] = (int64_t)n" << i
       << ";\n";
  }
  os << "        ";
  emitKernelCall(os, n, l, "0, 1", "v_");
  os << "        t += len;\n        u += len;\n        if (t < T) {\n";
  saveCheckpoint("u / S");
  os << "        }\n      }\n";
  for (size_t i = 0; i < numStates; ++i)
    os << "      memcpy(args->state_out[" << i << "] + (size_t)pair * n" << i
       << ", scratch[" << i << "], n" << i << " * sizeof(float));\n";
  os << "    }\n    for (int i = 0; i < " << numStates << "; ++i) free(scratch[i]);\n";
}

static void emitForward(raw_ostream &os, const KernelInterface &iface,
                        const Layout &l) {
  const std::string &n = iface.moduleName;
  // C-contiguous strides; 0 when the element count (or its byte size)
  // overflows, which we report as a shape error instead of corrupting memory.
  os << "static int miras_contiguous(int rank, const int64_t *sizes, int64_t "
        "*strides, int64_t *count) {\n"
        "  int64_t n = 1;\n"
        "  for (int i = rank - 1; i >= 0; --i) {\n"
        "    strides[i] = n;\n"
        "    if (__builtin_mul_overflow(n, sizes[i], &n)) return 0;\n"
        "  }\n"
        "  if (n > (int64_t)(PTRDIFF_MAX / sizeof(float))) return 0;\n"
        "  *count = n;\n  return 1;\n}\n\n";

  os << "MIRAS_EXPORT int32_t " << n
     << "_forward_range(const miras_forward_args *args, int64_t begin, "
        "int64_t end) {\n";
  emitRangePrologue(os);
  os << "  if (args->q == NULL || args->k == NULL || args->v == NULL || "
        "args->o == NULL)\n    return MIRAS_ERR_NULL_POINTER;\n";
  emitNonNullArray(os, "gates", l.gates.size());
  emitNonNullArray(os, "state_out", l.statesOut.size());
  // Descriptors; every shape is checked before anything is written.
  os << "  int64_t count;\n";
  auto desc = [&](StringRef var, const Tensor &t, StringRef ptr,
                  StringRef countVar = "count") {
    emitDescriptor(os, var, t, ptr, countVar);
  };
  emitTokenInputs(os, l, "d_");
  for (size_t i = 0; i < l.statesOut.size(); ++i) {
    std::string c = "n_s" + std::to_string(i);
    os << "  int64_t " << c << ";\n";
    desc("d_s" + std::to_string(i), l.statesOut[i],
         "args->state_out[" + std::to_string(i) + "]", c);
  }
  desc("d_o", l.o, "args->o");
  emitChunkPositionCheck(os, iface, "state_in");
  const bool saves = iface.backwardSegment > 0 && iface.forwardTakesViews;
  if (!saves)
    os << "  /* " << (iface.backwardSegment > 0 ? "A kernel that reads flat buffers"
                                                 : "Built without --backward")
       << ": no checkpoints to save. */\n"
       << "  if (args->checkpoints != NULL) return MIRAS_ERR_UNSUPPORTED;\n";
  else
    emitCheckpointScratch(os, iface, l);
  // The kernel updates the state in place, so the initial state of each pair
  // in range goes into state_out first (states are [B, H, ...], so a range of
  // pairs is one contiguous block). memmove: the caller may pass overlapping
  // buffers.
  // An anchor is seeded only for the pairs that start inside a chunk: at
  // chunk position 0 the kernel sets it at the first token (a decode step
  // then moves no anchor it would overwrite).
  const int position = chunkPositionIndex(iface);
  for (size_t i = 0; i < l.statesOut.size(); ++i) {
    if (iface.states[i].role != KernelInterface::State::Role::Anchor) {
      emitSeedRange(os, i, "state_in", "state_out", "begin", "(end - begin)");
      continue;
    }
    std::string idx = std::to_string(i);
    os << "  if (args->state_in && args->state_in[" << position << "]) {\n"
       << "    const size_t per_pair = (size_t)(n_s" << idx << " / pairs);\n"
       << "    const float *src = args->state_in[" << idx << "];\n"
       << "    for (int64_t pair = begin; pair < end; ++pair) {\n"
       << "      if (args->state_in[" << position << "][pair] == 0.0f) continue;\n"
       << "      float *dst = args->state_out[" << idx << "] + (size_t)pair * per_pair;\n"
       << "      if (src == NULL) memset(dst, 0, per_pair * sizeof(float));\n"
       << "      else if (src + (size_t)pair * per_pair != dst)\n"
       << "        memmove(dst, src + (size_t)pair * per_pair, per_pair * sizeof(float));\n"
       << "    }\n  }\n";
  }
  // The kernel's arguments in KernelLayout's order (StepSignature.h).
  os << "  miras_float_mode mode = miras_float_mode_enter();\n";
  if (saves) {
    os << "  if (args->checkpoints != NULL) {\n";
    emitCheckpointedForward(os, iface, l);
    os << "    miras_float_mode_leave(mode);\n    return MIRAS_OK;\n  }\n";
  }
  os << "  ";
  emitKernelCall(os, n, l, "begin, end", "d_");
  os << "  miras_float_mode_leave(mode);\n  return MIRAS_OK;\n}\n\n";

  os << "MIRAS_EXPORT int32_t " << n
     << "_forward(const miras_forward_args *args) {\n"
     << "  if (args == NULL) return MIRAS_ERR_NULL_POINTER;\n"
     << "  int64_t pairs;\n"
     << "  if (args->batch <= 0 || args->heads <= 0 ||\n"
     << "      __builtin_mul_overflow(args->batch, args->heads, &pairs))\n"
     << "    return MIRAS_ERR_SHAPE;\n"
     << "  return " << n << "_forward_range(args, 0, pairs);\n}\n\n";

  os << "MIRAS_EXPORT " << explicitSignature(iface, l) << " {\n";
  auto array = [&](StringRef type, StringRef var, const std::vector<Tensor> &ts) {
    if (ts.empty())
      return std::string("NULL");
    os << "  " << type << var << "[" << ts.size() << "] = {";
    for (auto [i, t] : enumerate(ts))
      os << (i ? ", " : "") << t.cName;
    os << "};\n";
    return var.str();
  };
  std::string gatesVar = array("const float *", "miras_g", l.gates);
  std::string inVar = array("const float *", "miras_in", l.statesIn);
  std::string outVar = array("float *", "miras_out", l.statesOut);
  os << "  miras_forward_args miras_a;\n"
     << "  miras_a.batch = B;\n  miras_a.length = T;\n  miras_a.heads = H;\n"
     << "  miras_a.q = q;\n  miras_a.k = k;\n  miras_a.v = v;\n"
     << "  miras_a.gates = " << gatesVar << ";\n"
     << "  miras_a.state_in = " << inVar << ";\n"
     << "  miras_a.state_out = " << outVar << ";\n"
     << "  miras_a.o = o;\n  miras_a.checkpoints = NULL;\n"
     << "  return " << n << "_forward(&miras_a);\n}\n\n";
}

/// The memref descriptor types and the kernel's prototype (CPU target).
static void emitKernelPrototype(raw_ostream &os, const std::string &n,
                                const Layout &l) {
  // One descriptor type per rank in use (StridedMemRefType<float, R>).
  std::set<size_t> ranks = {3, 4};
  for (const auto &t : l.statesIn)
    ranks.insert(t.sizes.size());
  ranks.insert(l.k.sizes.size()); // 5 for a multistep module
  for (size_t r : ranks)
    os << "typedef struct { float *allocated; float *aligned; int64_t offset; "
       << "int64_t sizes[" << r << "]; int64_t strides[" << r << "]; } miras_memref"
       << r << ";\n";

  // Kernel prototype: argument order of KernelInterface.h.
  std::vector<const Tensor *> kernelArgs = {&l.q, &l.k, &l.v};
  for (const auto &g : l.gates)
    kernelArgs.push_back(&g);
  for (const auto &t : l.statesOut)
    kernelArgs.push_back(&t);
  kernelArgs.push_back(&l.o);
  os << "\nextern void _mlir_ciface_" << n << "_kernel(int64_t, int64_t";
  for (const Tensor *t : kernelArgs)
    os << ", miras_memref" << t->sizes.size() << " *";
  os << ");\n\n";
}

/// The descriptor ranks and the prototype of the backward kernel, in
/// BackwardKernelLayout's order (StepSignature.h).
static void emitBackwardPrototype(raw_ostream &os, const KernelInterface &iface,
                                  const Layout &l) {
  const std::string &n = iface.moduleName;
  // Checkpoints [1, N, shape] and the segment [1, S, shape] (one pair at a
  // time) have the rank of their state [B, H, shape]: the forward's
  // descriptor types.
  std::vector<size_t> args = {l.q.sizes.size(), l.k.sizes.size(), l.v.sizes.size()};
  for (const auto &g : l.gates)
    args.push_back(g.sizes.size());
  args.push_back(l.o.sizes.size());
  for (const auto &t : l.statesIn)
    args.push_back(t.sizes.size());
  args.insert(args.end(), {l.q.sizes.size(), l.k.sizes.size(), l.v.sizes.size()});
  for (const auto &g : l.gates)
    args.push_back(g.sizes.size());
  for (const auto &t : l.statesIn) // checkpoints
    args.push_back(t.sizes.size());
  for (size_t i = 0; i < l.statesIn.size(); ++i) // segments: carried states
    if (iface.states[i].role == KernelInterface::State::Role::Carried)
      args.push_back(l.statesIn[i].sizes.size());
  os << "extern void _mlir_ciface_" << n << "_backward_kernel(int64_t, int64_t";
  for (size_t r : args)
    os << ", miras_memref" << r << " *";
  os << ", int64_t);\n\n";
}

/// <name>_backward_range and <name>_backward (CPU target, --backward): the
/// forward glue's validation, the running state adjoints initialised in
/// d_state_in, the workspace (checkpoints whose slot 0 holds each pair's
/// initial state, and one segment) allocated here, the kernel call.
static void emitBackward(raw_ostream &os, const KernelInterface &iface,
                         const Layout &l) {
  const std::string &n = iface.moduleName;
  const size_t numStates = l.statesIn.size();
  os << "MIRAS_EXPORT int32_t " << n
     << "_backward_range(const miras_backward_args *args, int64_t begin, "
        "int64_t end) {\n";
  emitRangePrologue(os);
  os << "  if (args->q == NULL || args->k == NULL || args->v == NULL || "
        "args->d_o == NULL ||\n"
     << "      args->d_q == NULL || args->d_k == NULL || args->d_v == NULL)\n"
     << "    return MIRAS_ERR_NULL_POINTER;\n";
  if (!l.gates.empty()) {
    os << "  if (args->gates == NULL || args->d_gates == NULL) return "
          "MIRAS_ERR_NULL_POINTER;\n";
    for (size_t i = 0; i < l.gates.size(); ++i)
      os << "  if (args->gates[" << i << "] == NULL || args->d_gates[" << i
         << "] == NULL) return MIRAS_ERR_NULL_POINTER;\n";
  }
  emitNonNullArray(os, "d_state_in", numStates);
  // Checkpoints a forward saved (miras_abi.h MIRAS_CHECKPOINTS): the carried
  // states' are taken from there, not computed.
  os << "  const int given = args->checkpoints != NULL;\n";
  for (size_t i = 0; i < numCarried(iface); ++i)
    os << "  if (given && args->checkpoints[" << i << "] == NULL) return MIRAS_ERR_NULL_POINTER;\n";
  os << "  int64_t count;\n";
  auto desc = [&](StringRef var, const Tensor &t, StringRef ptr,
                  StringRef countVar = "count") {
    emitDescriptor(os, var, t, ptr, countVar);
  };
  emitTokenInputs(os, l, "m_");
  desc("m_do", l.o, "args->d_o");
  for (size_t i = 0; i < numStates; ++i) {
    std::string c = "n_s" + std::to_string(i);
    os << "  int64_t " << c << ";\n";
    desc("m_ds" + std::to_string(i), l.statesIn[i],
         "args->d_state_in[" + std::to_string(i) + "]", c);
  }
  desc("m_dq", l.q, "args->d_q");
  desc("m_dk", l.k, "args->d_k");
  desc("m_dv", l.v, "args->d_v");
  for (size_t i = 0; i < l.gates.size(); ++i)
    desc("m_dg" + std::to_string(i), l.gates[i],
         "args->d_gates[" + std::to_string(i) + "]");
  // Workspace, reused by the pairs of the range one after the other: per
  // carried state its checkpoints (BackwardKernelLayout::numCheckpoints) and S
  // segment states, per anchor and chunk position one slot for its initial
  // value; sizes checked for overflow like every shape. work[i] is state i's
  // checkpoints, work[numStates + i] carried state i's segment.
  const size_t carried = numCarried(iface);
  const size_t numWork = numStates + carried;
  emitChunkPositionCheck(os, iface, "state_in");
  os << "  const int64_t S = " << iface.backwardSegment << ";\n"
     << "  const int64_t N = (T - 1 + " << iface.chunk - 1 << ") / S + 1;\n";
  for (size_t i = 0; i < numStates; ++i) {
    std::string idx = std::to_string(i);
    const Tensor &t = l.statesIn[i];
    std::vector<std::string> ckptSizes{"1", i < carried ? "N" : "1"};
    ckptSizes.insert(ckptSizes.end(), t.sizes.begin() + 2, t.sizes.end());
    os << "  int64_t n_c" << idx << ";\n"
       << "  miras_memref" << ckptSizes.size() << " m_c" << idx
       << " = {NULL, NULL, 0, {" << join(ckptSizes, ", ") << "}, {0}};\n"
       << "  if (!miras_contiguous(" << ckptSizes.size() << ", m_c" << idx
       << ".sizes, m_c" << idx << ".strides, &n_c" << idx
       << ")) return MIRAS_ERR_SHAPE;\n";
    if (i >= carried)
      continue;
    std::vector<std::string> segSizes{"1", "S"};
    for (int64_t d : BackwardKernelLayout::segmentSlotShape(iface.states[i].shape))
      segSizes.push_back(std::to_string(d));
    os << "  int64_t n_w" << idx << ";\n"
       << "  miras_memref" << segSizes.size() << " m_w" << idx
       << " = {NULL, NULL, 0, {" << join(segSizes, ", ") << "}, {0}};\n"
       << "  if (!miras_contiguous(" << segSizes.size() << ", m_w" << idx
       << ".sizes, m_w" << idx << ".strides, &n_w" << idx
       << ")) return MIRAS_ERR_SHAPE;\n";
  }
  if (numStates) {
    os << "  float *work[" << numWork << "] = {NULL};\n"
       << "  int failed = 0;\n";
    auto allocate = [&](size_t slot, StringRef var, StringRef count) {
      os << "  work[" << slot << "] = miras_alloc_floats(" << count << ");\n"
         << "  failed |= work[" << slot << "] == NULL;\n"
         << "  " << var << ".allocated = " << var << ".aligned = work[" << slot << "];\n";
    };
    for (size_t i = 0; i < numStates; ++i) {
      std::string idx = std::to_string(i);
      allocate(i, "m_c" + idx, "n_c" + idx);
      if (i < carried)
        allocate(numStates + i, "m_w" + idx, "n_w" + idx);
    }
    os << "  if (failed) {\n    for (int i = 0; i < " << numWork
       << "; ++i) free(work[i]);\n    return MIRAS_ERR_ALLOC;\n  }\n";
  }
  // Pair by pair: checkpoint 0 is the pair's initial state, read before its
  // d_state_in is written (a d_state_in may take the place of its state_in);
  // the running adjoint starts as the final state's, in d_state_in (memmove:
  // they may be the same buffer). The kernel keeps its checkpoints at slot 0
  // of the pair range it is given.
  os << "  miras_float_mode mode = miras_float_mode_enter();\n"
     << "  for (int64_t pair = begin; pair < end; ++pair) {\n";
  for (size_t i = 0; i < numStates; ++i) {
    std::string idx = std::to_string(i);
    // Saved checkpoints are copied into the workspace (N states, a small part of
    // the pass they replace): the caller's buffers stay read-only whatever the
    // kernel does with its own (a CUDA kernel run on the CPU recomputes them).
    if (i < carried)
      os << "  if (given) {\n    memcpy(work[" << i << "], args->checkpoints[" << idx
         << "] + (size_t)pair * (size_t)n_c" << idx << ", (size_t)n_c" << idx
         << " * sizeof(float));\n  } else\n";
    os << "  {\n    const size_t per_pair = (size_t)(n_s" << idx << " / pairs);\n"
       << "    const float *init = args->state_in ? args->state_in[" << idx
       << "] : NULL;\n"
       << "    if (init == NULL) memset(work[" << i
       << "], 0, per_pair * sizeof(float));\n"
       << "    else memcpy(work[" << i
       << "], init + (size_t)pair * per_pair, per_pair * sizeof(float));\n  }\n";
    emitSeedRange(os, i, "d_state_out", "d_state_in", "pair", "1");
  }
  os << "  _mlir_ciface_" << n
     << "_backward_kernel(pair, pair + 1, &m_q, &m_k, &m_v";
  for (size_t i = 0; i < l.gates.size(); ++i)
    os << ", &m_g" << i;
  os << ", &m_do";
  for (size_t i = 0; i < numStates; ++i)
    os << ", &m_ds" << i;
  os << ", &m_dq, &m_dk, &m_dv";
  for (size_t i = 0; i < l.gates.size(); ++i)
    os << ", &m_dg" << i;
  for (size_t i = 0; i < numStates; ++i)
    os << ", &m_c" << i;
  for (size_t i = 0; i < carried; ++i)
    os << ", &m_w" << i;
  os << ", (int64_t)given);\n  }\n  miras_float_mode_leave(mode);\n";
  if (numStates)
    os << "  for (int i = 0; i < " << numWork << "; ++i) free(work[i]);\n";
  os << "  return MIRAS_OK;\n}\n\n";

  os << "MIRAS_EXPORT int32_t " << n
     << "_backward(const miras_backward_args *args) {\n"
     << "  if (args == NULL) return MIRAS_ERR_NULL_POINTER;\n"
     << "  int64_t pairs;\n"
     << "  if (args->batch <= 0 || args->heads <= 0 ||\n"
     << "      __builtin_mul_overflow(args->batch, args->heads, &pairs))\n"
     << "    return MIRAS_ERR_SHAPE;\n"
     << "  return " << n << "_backward_range(args, 0, pairs);\n}\n\n";
}

std::string generateGlue(const KernelInterface &iface) {
  const std::string &n = iface.moduleName;
  Layout l = computeLayout(iface);
  std::string s;
  raw_string_ostream os(s);
  os << "/* ABI glue of miras module " << n << ", generated by " << kCompilerId
     << ". Do not edit. */\n"
     << "#include <math.h>\n#include <stddef.h>\n#include <stdint.h>\n"
     << "#include <stdlib.h>\n#include <string.h>\n\n"
     << generateHeader(iface) << "\n"
     << "#define MIRAS_EXPORT __attribute__((visibility(\"default\")))\n\n";

  const bool cpu = iface.hasTarget("cpu");
  const bool backward = cpu && iface.backwardSegment > 0;
  if (cpu) {
    emitFloatMode(os);
    emitKernelPrototype(os, n, l);
  }
  if (backward) {
    emitBackwardPrototype(os, iface, l);
    // Scratch starts on a cache line, as the kernel's own (MirasToLinalg.cpp):
    // malloc's 16-byte alignment splits every vector load and store of a
    // state, a checkpoint or a segment slot across two lines.
    os << "static float *miras_alloc_floats(int64_t n) {\n"
          "  size_t bytes = ((size_t)n * sizeof(float) + 63) & ~(size_t)63;\n"
          "  return (float *)aligned_alloc(64, bytes ? bytes : 64);\n}\n\n";
  }

  // Metadata tables. C forbids empty arrays, so absent tables are NULL.
  auto table = [&](StringRef type, StringRef var, size_t count, auto &&emitRow) {
    if (count == 0)
      return;
    os << "static const " << type << " " << var << "[" << count << "] = {\n";
    for (size_t i = 0; i < count; ++i) {
      os << "  ";
      emitRow(i);
      os << ",\n";
    }
    os << "};\n";
  };
  table("miras_param_info", "miras_params", iface.params.size(), [&](size_t i) {
    const auto &p = iface.params[i];
    os << "{" << cString(p.name) << ", " << cDouble(p.value) << ", "
       << (p.isInteger ? 1 : 0) << "}";
  });
  table("miras_gate_info", "miras_gates", iface.gates.size(), [&](size_t i) {
    const auto &g = iface.gates[i];
    os << "{" << cString(g.name) << ", "
       << (g.channel ? "MIRAS_GATE_CHANNEL" : "MIRAS_GATE_SCALAR") << ", "
       << (!g.channel ? "MIRAS_AXIS_NONE"
                      : g.axis == "dk" ? "MIRAS_AXIS_KEY" : "MIRAS_AXIS_VALUE")
       << ", " << (g.channel ? g.dim : 1) << ", " << (g.perStep ? 1 : 0) << ", ";
    if (g.range)
      os << "1, " << cDouble(g.range->lo) << ", " << cDouble(g.range->hi) << ", "
         << (g.range->loClosed ? 1 : 0) << ", " << (g.range->hiClosed ? 1 : 0) << "}";
    else
      os << "0, 0.0, 0.0, 0, 0}";
  });
  table("miras_state_info", "miras_states", iface.states.size(), [&](size_t i) {
    const auto &st = iface.states[i];
    static const char *const roles[] = {"MIRAS_STATE_CARRIED", "MIRAS_STATE_ANCHOR",
                                        "MIRAS_STATE_CHUNK_POSITION"};
    static const char *const inits[] = {"MIRAS_INIT_ZEROS", "MIRAS_INIT_IDENTITY",
                                        "MIRAS_INIT_UNIFORM", "MIRAS_INIT_NORMAL"};
    os << "{" << cString(st.name) << ", " << st.shape.size() << ", {"
       << joinInts(st.shape) << "}, " << roles[static_cast<int>(st.role)] << ", "
       << st.anchorOf << ", " << inits[static_cast<int>(st.init)] << ", "
       << cDouble(st.initScale) << ", " << st.initSeed << "ull}";
  });
  auto tableRef = [](bool present, StringRef var) {
    return present ? var.str() : std::string("NULL");
  };
  if (iface.cuda)
    emitCudaTable(os, *iface.cuda, "miras_cuda");
  if (backward && iface.cudaBackward)
    emitCudaTable(os, *iface.cudaBackward, "miras_cuda_backward");
  os << "\nstatic const miras_module_metadata miras_metadata_table = {\n"
     << "  MIRAS_ABI_VERSION, " << cString(n) << ", " << cString(iface.sourcePath)
     << ", " << cString(kCompilerId) << ",\n  " << iface.dk << ", " << iface.dv
     << ", " << iface.chunk << ", " << iface.steps << ", "
     << (iface.readAfterWrite ? 1 : 0) << ",\n  "
     << iface.params.size() << ", "
     << tableRef(!iface.params.empty(), "miras_params") << ", "
     << iface.gates.size() << ", " << tableRef(!iface.gates.empty(), "miras_gates")
     << ", " << iface.states.size() << ", "
     << tableRef(!iface.states.empty(), "miras_states") << ",\n  "
     << cString(join(iface.targets, ",")) << ",\n  " << cString(iface.rule)
     << ",\n  " << cDouble(iface.flopsPerToken) << ", " << cString(iface.algorithm)
     << ", " << (iface.cuda ? "&miras_cuda_table" : "NULL") << ",\n  "
     << (backward ? iface.backwardSegment : 0) << ", "
     << (backward && iface.cudaBackward ? "&miras_cuda_backward_table" : "NULL") << ", "
     << cDouble(backward ? iface.backwardFlopsPerToken : 0.0) << "};\n\n"
     << "MIRAS_EXPORT const miras_module_metadata *" << n << "_metadata(void) {\n"
     << "  return &miras_metadata_table;\n}\n\n";

  if (cpu)
    emitForward(os, iface, l);
  if (backward)
    emitBackward(os, iface, l);

  os << "MIRAS_EXPORT const miras_module_entry miras_module_v1 = {\n"
     << "  MIRAS_ABI_VERSION, " << n << "_metadata, "
     << (cpu ? n + "_forward, " + n + "_forward_range" : std::string("NULL, NULL"))
     << ",\n  "
     << (backward ? n + "_backward, " + n + "_backward_range" : std::string("NULL, NULL"))
     << "};\n";
  return s;
}

} // namespace miras
