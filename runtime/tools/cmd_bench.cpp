// cmd_bench.cpp: `miras bench lib.so` times a compiled module on random inputs and puts
// the figure next to the machine's measured fp32 peak, a scalar reference implementation
// (also a correctness cross-check) and, for a Gated DeltaNet, a hand-fused peer baseline;
// both are chosen by the module's derived update rule, never by its name.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/baseline_gdn.hpp"
#include "bench/gpu.hpp"
#include "bench/peak.hpp"
#include "bench/problem.hpp"
#include "bench/reference.hpp"
#include "commands.hpp"
#include "gate_sampling.hpp"
#include "miras/runtime.hpp"

namespace miras::cli {

const char kBenchHelp[] =
    "usage: miras bench <lib.so> [--batch B] [--length T] [--heads H] [--threads N]\n"
    "                   [--repeat R] [--warmup W] [--seed S] [--json] [--no-reference]\n"
    "                   [--device cpu|cuda] [--input-dtype f32|bf16] [--backward]\n"
    "                   [--decode]\n"
    "\n"
    "Time a compiled module on random inputs (q, k unit vectors per head, v ~ N(0, 1),\n"
    "gates uniform in their declared ranges (see 'miras info': sample), a small random\n"
    "initial state).\n"
    "Reports the median of R timed forwards after W warm-up ones: ms per forward,\n"
    "tokens/s (B*T/s), GFLOP/s (the module's flops_per_token * B*T*H/s), the measured\n"
    "fp32 FMA peak of this machine on the same threads and the fraction of it; then the\n"
    "speed-up over a scalar reference and the largest |o - o_ref|, and for a Gated\n"
    "DeltaNet the speed-up over a hand-fused baseline (ggml's structure). The reference\n"
    "is chosen by the module's structure, never its name: a linear memory W [dv, dk] whose\n"
    "derived update rule (miras info: rule) is that of linear_attention, retnet, mamba2,\n"
    "gla, deltanet, gated_deltanet or ttt_linear, with any gate names (reference_model\n"
    "says which). The reference and the baseline split the B*H pairs over the same threads\n"
    "as the module.\n"
    "\n"
    "options:\n"
    "  --batch B        batch size (default 2)\n"
    "  --length T       tokens per sequence (default 1024)\n"
    "  --heads H        heads (default 8)\n"
    "  --threads N      CPU threads; 0 = one per CPU (default 0)\n"
    "  --repeat R       timed forwards, median reported (default 5)\n"
    "  --warmup W       untimed forwards first (default 1)\n"
    "  --seed S         seed of the random inputs (default 0)\n"
    "  --json           print one JSON object instead of text (null = not applicable)\n"
    "  --no-reference   skip the scalar reference (and the cross-checks)\n"
    "  --device DEV     cpu (default) or cuda\n"
    "  --input-dtype D  f32 (default) or bf16: q, k, v and the gates rounded to bfloat16\n"
    "                   (cuda only)\n"
    "  --backward       also time the backward pass (a module built with mirasc --backward,\n"
    "                   cpu): see below\n"
    "  --decode         also run the sequence as T one-token calls (cpu): see below\n"
    "\n"
    "With --backward, after the forward: R rounds (after W warm-up ones) that each time\n"
    "the forward, a backward (random dL/do and dL/d(final states), N(0, 1)) through\n"
    "miras_library_backward on the same threads, the forward that saves the checkpoints\n"
    "and the backward that reads them (a training step's pair); the median ms of each,\n"
    "and each one's time over the forward as the median of its per-round ratios (a slow\n"
    "spell of the machine slows both sides of a round's ratio); the states the recompute\n"
    "keeps, ceil((T+C-1)/S) + S per (batch, head) pair in flight for segment S and chunk\n"
    "C (against T to keep them all) and their bytes in this call (one pair in flight per\n"
    "thread; the segment slots' spare rows and the kernel's few scratch states not\n"
    "counted); the backward from checkpoints' GFLOP/s (metadata backward_flops_per_token:\n"
    "the reverse step plus one recompute of the state update) and its work over the\n"
    "forward's, the time ratio it would have at the forward's GFLOP/s; and for a module\n"
    "with a scalar reference, a hand-written scalar reverse sweep (same segment) timed on\n"
    "the same threads, and the largest |d - d_ref| / max |d_ref| over the adjoints of q,\n"
    "k, v, the gates and the initial state (worst one named).\n"
    "\n"
    "With --decode, after the forward: the same sequence as T successive calls of one token\n"
    "each (a decode loop: every state carried in place, a chunked module's anchors and chunk\n"
    "position included), timed as a whole (median of R loops); ms per token, its ratio to a\n"
    "token of the whole-sequence call, and max |o - o_whole| / max |o_whole| (exact\n"
    "continuation gives the whole call's numbers).\n"
    "\n"
    "With --device cuda (a module built with --target=cuda or cpu,cuda, a CUDA driver and\n"
    "a GPU), the inputs are uploaded once and the device-pointer forward is timed (each\n"
    "forward: launch, then wait for the GPU): ms, tokens/s, GFLOP/s, and the achieved\n"
    "GB/s of the bytes a forward must move (inputs read once, o written, states read and\n"
    "written) as a fraction of the GPU's measured copy bandwidth (a 1 GiB device-to-device\n"
    "copy, read plus write). A module that also has the cpu target is run once on the CPU\n"
    "(--threads) on the same inputs, and the largest |o - o_cpu| is reported.\n";

namespace {

using Clock = std::chrono::steady_clock;

struct BenchOptions {
  std::string library;
  int64_t batch = 2, length = 1024, heads = 8;
  int64_t threads = 0, repeat = 5, warmup = 1;
  uint64_t seed = 0;
  bool json = false, reference = true, backward = false, decode = false;
  std::string device = "cpu";
  std::string inputDtype = "f32";
};

int64_t parseCount(const std::string &option, const std::string &value, int64_t minimum) {
  bool digits = !value.empty() && value.find_first_not_of("0123456789") == std::string::npos;
  if (!digits || value.size() > 12 || std::stoll(value) < minimum)
    throw UsageError(option + " expects an integer >= " + std::to_string(minimum) + ", got '" +
                     value + "'");
  return std::stoll(value);
}

// Accepts "--opt VALUE" and "--opt=VALUE".
BenchOptions parseOptions(const Args &args) {
  BenchOptions opts;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--json") {
      opts.json = true;
      continue;
    }
    if (args[i] == "--no-reference") {
      opts.reference = false;
      continue;
    }
    if (args[i] == "--backward") {
      opts.backward = true;
      continue;
    }
    if (args[i] == "--decode") {
      opts.decode = true;
      continue;
    }
    auto [arg, value] = nextOption(args, i);
    if (arg == "--batch")
      opts.batch = parseCount(arg, value, 1);
    else if (arg == "--length")
      opts.length = parseCount(arg, value, 1);
    else if (arg == "--heads")
      opts.heads = parseCount(arg, value, 1);
    else if (arg == "--threads")
      opts.threads = parseCount(arg, value, 0);
    else if (arg == "--repeat")
      opts.repeat = parseCount(arg, value, 1);
    else if (arg == "--warmup")
      opts.warmup = parseCount(arg, value, 0);
    else if (arg == "--seed")
      opts.seed = static_cast<uint64_t>(parseCount(arg, value, 0));
    else if (arg == "--device")
      opts.device = value;
    else if (arg == "--input-dtype")
      opts.inputDtype = value;
    else if (arg.rfind("-", 0) == 0)
      throw UsageError("unknown option '" + arg + "' for 'miras bench'");
    else if (opts.library.empty())
      opts.library = arg;
    else
      throw UsageError("unexpected argument '" + arg + "'");
  }
  if (opts.library.empty())
    throw UsageError("usage: miras bench <lib.so> [options] (see 'miras bench --help')");
  checkDeviceOptions(opts.device, opts.inputDtype);
  if (opts.backward && opts.inputDtype != "f32")
    throw UsageError("--backward takes f32 inputs: the backward kernels read float32");
  if (opts.decode && opts.device != "cpu")
    throw UsageError("--decode runs on the cpu");
  if (opts.threads > 4096)
    throw UsageError("--threads " + std::to_string(opts.threads) + " is more than 4096");
  return opts;
}

// ---------------------------------------------------------------------------------------
// Random inputs

struct Inputs {
  std::vector<float> q, k, v, o;
  std::vector<std::vector<float>> gates, initialStates, finalStates;
};

Inputs makeInputs(const Library &lib, const BenchOptions &opts) {
  const miras_module_metadata &m = lib.metadata();
  const int64_t B = opts.batch, T = opts.length, H = opts.heads;
  std::mt19937_64 rng(opts.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Inputs in;
  // q and k: unit vectors along their last axis (per head, per step), as fla normalises.
  auto unitVectors = [&](const std::string &name) {
    std::vector<int64_t> shape = lib.shapeOf(name, B, T, H);
    std::vector<float> x = allocateFloats(Tensor::numelOf(shape), "input '" + name + "'");
    const int64_t width = shape.back();
    for (size_t row = 0; row < x.size(); row += width) {
      double norm = 0.0;
      for (int64_t j = 0; j < width; ++j) {
        x[row + j] = normal(rng);
        norm += double(x[row + j]) * x[row + j];
      }
      const float scale = static_cast<float>(1.0 / std::sqrt(std::max(norm, 1e-30)));
      for (int64_t j = 0; j < width; ++j)
        x[row + j] *= scale;
    }
    return x;
  };
  in.q = unitVectors("q");
  in.k = unitVectors("k");
  in.v = allocateFloats(Tensor::numelOf(lib.shapeOf("v", B, T, H)), "input 'v'");
  for (float &x : in.v)
    x = normal(rng);
  in.o = allocateFloats(Tensor::numelOf(lib.shapeOf("o", B, T, H)), "output 'o'");
  // Gates: uniform in the interval their declared range gives (gate_sampling.hpp); a
  // draw on an open end is drawn again.
  for (int32_t g = 0; g < m.num_gates; ++g) {
    // The draws are float32: compare them with the range's ends rounded to float32, so
    // that a closed end's own value (0.05f is above 0.05) counts as inside.
    miras_gate_info gate = m.gates[g];
    gate.range_lo = static_cast<float>(gate.range_lo);
    gate.range_hi = static_cast<float>(gate.range_hi);
    SampleInterval interval = sampleInterval(m.gates[g]);
    std::uniform_real_distribution<float> uniform(static_cast<float>(interval.lo),
                                                  static_cast<float>(interval.hi));
    std::vector<float> x = allocateFloats(Tensor::numelOf(lib.shapeOf(gate.name, B, T, H)),
                                          "gate '" + std::string(gate.name) + "'");
    for (float &value : x)
      do
        value = uniform(rng);
      while (!inDeclaredRange(gate, value));
    in.gates.push_back(std::move(x));
  }
  // Initial states: a small random W for linear memories (as demo.py), N(0, 1/fan_in)
  // weights or duals for MLP memories, zero momentum S.
  for (int32_t s = 0; s < m.num_states; ++s) {
    const miras_state_info &info = m.states[s];
    std::vector<float> x = allocateFloats(Tensor::numelOf(lib.shapeOf(info.name, B, T, H)),
                                          "state '" + std::string(info.name) + "'");
    const std::string name = info.name;
    float scale = 0.0f;
    if (info.role != MIRAS_STATE_CARRIED)
      scale = 0.0f; // an anchor and the chunk position: a sequence's start
    else if (name == "W" || name == "A")
      scale = 0.05f;
    else if (name[0] == 'W' || name[0] == 'A')
      scale = 1.0f / std::sqrt(static_cast<float>(info.shape[info.rank - 1]));
    if (scale != 0.0f)
      for (float &value : x)
        value = scale * normal(rng);
    in.initialStates.push_back(x);
    in.finalStates.push_back(std::move(x));
  }
  return in;
}

// ---------------------------------------------------------------------------------------
// Timing

struct Timing {
  double medianMs = 0.0, bestMs = 0.0;
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

Timing summarize(const std::vector<double> &ms) {
  return {median(ms), *std::min_element(ms.begin(), ms.end())};
}

/// Times several runs in rounds: `warmup` untimed rounds, then `repeat` rounds that
/// each run every one of `runs` once, in order. Returns the ms of each run per round.
/// A ratio of two runs is then the median of its per-round ratios (pairedRatio): a slow
/// spell of a shared machine (its neighbours), which lasts seconds, slows both sides of
/// one round's ratio alike, where timing each run's repeats as a block would put the
/// spell into one side only.
std::vector<std::vector<double>> timeRounds(int64_t warmup, int64_t repeat,
                                            const std::vector<std::function<void()>> &runs) {
  for (int64_t i = 0; i < warmup; ++i)
    for (const std::function<void()> &run : runs)
      run();
  std::vector<std::vector<double>> ms(runs.size());
  for (int64_t i = 0; i < repeat; ++i)
    for (size_t r = 0; r < runs.size(); ++r) {
      auto start = Clock::now();
      runs[r]();
      ms[r].push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    }
  return ms;
}

/// The median and best of `repeat` timed runs after `warmup` untimed ones.
Timing timeRuns(int64_t warmup, int64_t repeat, const std::function<void()> &run) {
  return summarize(timeRounds(warmup, repeat, {run})[0]);
}

/// One CPU forward through the runtime's entry point; throws its error.
void runForward(Library &lib, const miras_forward_args &args) {
  miras_status status = miras_library_forward_args(lib.handle(), &args);
  if (status != MIRAS_OK)
    throw Error(status, miras_last_error());
}

/// The median over rounds of numerator[i] / denominator[i] (timeRounds).
double pairedRatio(const std::vector<double> &numerator, const std::vector<double> &denominator) {
  std::vector<double> ratios;
  for (size_t i = 0; i < numerator.size(); ++i)
    ratios.push_back(numerator[i] / denominator[i]);
  return median(std::move(ratios));
}

double maxAbsDiff(const std::vector<float> &a, const std::vector<float> &b) {
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    double d = std::fabs(double(a[i]) - double(b[i]));
    if (!(d <= worst)) // NaN propagates as infinity: a broken output must not look exact
      worst = std::isnan(d) ? INFINITY : d;
  }
  return worst;
}

double maxAbs(const std::vector<float> &a) {
  double worst = 0.0;
  for (float x : a)
    worst = std::max(worst, double(std::fabs(x)));
  return worst;
}

bool allFinite(const std::vector<float> &a) {
  for (float x : a)
    if (!std::isfinite(x))
      return false;
  return true;
}

// ---------------------------------------------------------------------------------------
// Output

using Number = std::optional<double>;

std::string quote(const std::string &s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\')
      out += '\\', out += static_cast<char>(c);
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else
      out += static_cast<char>(c);
  }
  return out + "\"";
}

std::string jsonNumber(Number value) {
  if (!value || !std::isfinite(*value))
    return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", *value);
  return buf;
}

std::string jsonText(const std::optional<std::string> &value) {
  return value ? quote(*value) : "null";
}

/// What every bench run reports, on either device.
struct RunFigures {
  std::string module, library, algorithm;
  int64_t batch, length, heads, dk, dv, chunk, threads, repeat, warmup;
  uint64_t seed;
  Timing timing;
  double tokensPerS = 0.0;
  Number flopsPerToken, gflops;
  bool finite = true;
};

/// A JSON object built field by field, in order.
struct JsonObject {
  std::string text = "{";
  void add(const char *key, const std::string &value) {
    text += (text.size() > 1 ? ", " : "") + quote(key) + ": " + value;
  }
  void print() const { std::printf("%s}\n", text.c_str()); }
};

void addRunFigures(JsonObject &j, const RunFigures &r) {
  j.add("module", quote(r.module));
  j.add("library", quote(r.library));
  j.add("batch", std::to_string(r.batch));
  j.add("length", std::to_string(r.length));
  j.add("heads", std::to_string(r.heads));
  j.add("dk", std::to_string(r.dk));
  j.add("dv", std::to_string(r.dv));
  j.add("threads", std::to_string(r.threads));
  j.add("chunk", std::to_string(r.chunk));
  j.add("algorithm", quote(r.algorithm));
  j.add("repeat", std::to_string(r.repeat));
  j.add("warmup", std::to_string(r.warmup));
  j.add("seed", std::to_string(r.seed));
  j.add("ms", jsonNumber(r.timing.medianMs));
  j.add("ms_best", jsonNumber(r.timing.bestMs));
  j.add("tokens_per_s", jsonNumber(r.tokensPerS));
  j.add("flops_per_token", jsonNumber(r.flopsPerToken));
  j.add("gflops", jsonNumber(r.gflops));
  j.add("output_finite", r.finite ? "true" : "false");
}

/// `--backward`: the backward pass next to the forward.
struct BackwardFigures {
  int64_t segment = 0, statesPerPair = 0, allStatesPerPair = 0;
  double savedBytes = 0.0; // the recompute's states in this call
  Timing timing;
  double overForward = 0.0;
  bool finite = true;
  Number referenceMs, speedupVsReference, maxRelDiffVsReference;
  std::optional<std::string> worstOutput, referenceNote;
  // The training step's pair (miras_abi.h MIRAS_CHECKPOINTS): the forward saving the
  // checkpoints, the backward reading them instead of its first pass.
  Timing savingForward, fromCheckpoints;
  // The forward timed in the same rounds as these (timeRounds): the ratios' denominator.
  Timing roundsForward;
  double savingOverForward = 0.0, fromCheckpointsOverForward = 0.0;
  double checkpointBytes = 0.0;   // what the forward saves for the whole call
  double maxRelDiffFromCheckpoints = 0.0; // its adjoints against the recomputing backward's
  std::string worstFromCheckpoints;
  // The backward from checkpoints' work (metadata backward_flops_per_token): its
  // GFLOP/s, and its work over the forward's, the time ratio it would have at the
  // forward's GFLOP/s.
  Number flopsPerToken, gflops, workOverForward;
};

/// --decode: the sequence as T one-token calls.
struct DecodeFigures {
  Timing timing;            // of the whole loop of T calls
  double msPerToken = 0.0;  // timing.medianMs / T
  double overWhole = 0.0;   // msPerToken over a token of the whole-sequence call
  double maxRelDiff = 0.0;  // max |o - o_whole| / max |o_whole|
};

struct Result : RunFigures {
  std::optional<BackwardFigures> backward;
  std::optional<DecodeFigures> decode;
  std::string peakIsa;
  double peakGflops = 0.0;
  Number fractionOfPeak;
  Number referenceMs, speedupVsReference, maxAbsDiffVsReference, maxRelDiffVsReference;
  Number baselineMs, speedupVsBaseline, baselineMaxAbsDiffVsReference;
  std::optional<std::string> baselineIsa, referenceNote, baselineNote, referenceModel;
};

void printJson(const Result &r) {
  JsonObject j;
  j.add("device", quote("cpu"));
  addRunFigures(j, r);
  j.add("peak_gflops", jsonNumber(r.peakGflops));
  j.add("peak_isa", quote(r.peakIsa));
  j.add("fraction_of_peak", jsonNumber(r.fractionOfPeak));
  j.add("reference_model", jsonText(r.referenceModel));
  j.add("reference_ms", jsonNumber(r.referenceMs));
  j.add("speedup_vs_reference", jsonNumber(r.speedupVsReference));
  j.add("max_abs_diff_vs_reference", jsonNumber(r.maxAbsDiffVsReference));
  j.add("max_rel_diff_vs_reference", jsonNumber(r.maxRelDiffVsReference));
  j.add("reference_note", jsonText(r.referenceNote));
  j.add("baseline_ms", jsonNumber(r.baselineMs));
  j.add("speedup_vs_baseline", jsonNumber(r.speedupVsBaseline));
  j.add("baseline_isa", jsonText(r.baselineIsa));
  j.add("baseline_max_abs_diff_vs_reference", jsonNumber(r.baselineMaxAbsDiffVsReference));
  j.add("baseline_note", jsonText(r.baselineNote));
  if (const std::optional<DecodeFigures> &d = r.decode) {
    j.add("decode_ms_per_token", jsonNumber(d->msPerToken));
    j.add("decode_over_whole", jsonNumber(d->overWhole));
    j.add("decode_max_rel_diff_vs_whole", jsonNumber(d->maxRelDiff));
  }
  if (const std::optional<BackwardFigures> &bw = r.backward) {
    j.add("backward_ms", jsonNumber(bw->timing.medianMs));
    j.add("backward_ms_best", jsonNumber(bw->timing.bestMs));
    j.add("backward_over_forward", jsonNumber(bw->overForward));
    j.add("backward_rounds_forward_ms", jsonNumber(bw->roundsForward.medianMs));
    j.add("backward_segment", std::to_string(bw->segment));
    j.add("backward_states_per_pair", std::to_string(bw->statesPerPair));
    j.add("backward_all_states_per_pair", std::to_string(bw->allStatesPerPair));
    j.add("backward_saved_bytes", jsonNumber(bw->savedBytes));
    j.add("backward_output_finite", bw->finite ? "true" : "false");
    j.add("saving_forward_ms", jsonNumber(bw->savingForward.medianMs));
    j.add("saving_forward_over_forward", jsonNumber(bw->savingOverForward));
    j.add("backward_from_checkpoints_ms", jsonNumber(bw->fromCheckpoints.medianMs));
    j.add("backward_from_checkpoints_over_forward", jsonNumber(bw->fromCheckpointsOverForward));
    j.add("checkpoint_bytes", jsonNumber(bw->checkpointBytes));
    j.add("backward_from_checkpoints_max_rel_diff", jsonNumber(bw->maxRelDiffFromCheckpoints));
    j.add("backward_flops_per_token", jsonNumber(bw->flopsPerToken));
    j.add("backward_from_checkpoints_gflops", jsonNumber(bw->gflops));
    j.add("backward_from_checkpoints_fraction_of_peak",
          jsonNumber(bw->gflops ? Number(*bw->gflops / r.peakGflops) : Number()));
    j.add("backward_work_over_forward", jsonNumber(bw->workOverForward));
    j.add("reference_backward_ms", jsonNumber(bw->referenceMs));
    j.add("backward_speedup_vs_reference", jsonNumber(bw->speedupVsReference));
    j.add("backward_max_rel_diff_vs_reference", jsonNumber(bw->maxRelDiffVsReference));
    j.add("backward_worst_output", jsonText(bw->worstOutput));
    j.add("reference_backward_note", jsonText(bw->referenceNote));
  }
  j.print();
}

std::string fixed(double value, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, value);
  return buf;
}

std::string sci(double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2e", value);
  return buf;
}

void printText(const Result &r) {
  std::printf("miras bench: %s (%s)\n", r.module.c_str(), r.library.c_str());
  std::printf("  dk=%lld dv=%lld, chunk %lld, %s algorithm; B=%lld T=%lld H=%lld; %lld "
              "thread%s, cpu; median of %lld after %lld warm-up\n",
              (long long)r.dk, (long long)r.dv, (long long)r.chunk, r.algorithm.c_str(),
              (long long)r.batch, (long long)r.length, (long long)r.heads,
              (long long)r.threads, r.threads == 1 ? "" : "s", (long long)r.repeat,
              (long long)r.warmup);
  std::printf("  module     %10.3f ms  (best %.3f)   %.3f Mtok/s   %s\n", r.timing.medianMs,
              r.timing.bestMs, r.tokensPerS * 1e-6,
              r.gflops ? (fixed(*r.gflops, 1) + " GFLOP/s = " +
                          fixed(100.0 * *r.fractionOfPeak, 1) + "% of peak")
                             .c_str()
                       : "GFLOP/s unavailable (the module reports no flops_per_token)");
  std::printf("  peak       %10.1f GFLOP/s fp32 FMA (%s, %lld thread%s, measured)\n",
              r.peakGflops, r.peakIsa.c_str(), (long long)r.threads, r.threads == 1 ? "" : "s");
  if (!r.finite)
    std::printf("  warning: the module's output o has NaN or infinite values\n");
  if (r.referenceMs)
    std::printf("  reference  %10.3f ms  scalar loops (%s rule): module is %.2fx faster; max "
                "|o - o_ref| = %s (relative %s)\n",
                *r.referenceMs, r.referenceModel->c_str(), *r.speedupVsReference,
                sci(*r.maxAbsDiffVsReference).c_str(),
                sci(*r.maxRelDiffVsReference).c_str());
  else
    std::printf("  reference  none: %s\n", r.referenceNote ? r.referenceNote->c_str() : "");
  if (r.baselineMs) {
    std::printf("  baseline   %10.3f ms  hand-fused GDN (%s): module is %.2fx faster", *r.baselineMs,
                r.baselineIsa->c_str(), *r.speedupVsBaseline);
    if (r.baselineMaxAbsDiffVsReference)
      std::printf("; baseline max |o - o_ref| = %s", sci(*r.baselineMaxAbsDiffVsReference).c_str());
    else if (r.baselineNote)
      std::printf("; %s", r.baselineNote->c_str());
    std::printf("\n");
  } else {
    std::printf("  baseline   none: %s\n", r.baselineNote ? r.baselineNote->c_str() : "");
  }
  if (const std::optional<DecodeFigures> &d = r.decode)
    std::printf("  decode     %10.4f ms per token as %lld one-token calls (states in place): "
                "%.2fx a token of the whole call; max |o - o_whole| / max |o_whole| = %s\n",
                d->msPerToken, (long long)r.length, d->overWhole, sci(d->maxRelDiff).c_str());
  if (const std::optional<BackwardFigures> &bw = r.backward) {
    std::printf("  rounds     %lld of: forward, backward, forward saving checkpoints, backward "
                "from them; each ratio below is the median of its per-round ratios to that "
                "round's forward (median %.3f ms)\n",
                (long long)r.repeat, bw->roundsForward.medianMs);
    std::printf("  backward   %10.3f ms  (best %.3f)   %.2fx the forward; segment %lld keeps "
                "%lld states per pair (T = %lld to keep all), %.3g MB in this call\n",
                bw->timing.medianMs, bw->timing.bestMs, bw->overForward,
                (long long)bw->segment, (long long)bw->statesPerPair,
                (long long)bw->allStatesPerPair, bw->savedBytes * 1e-6);
    std::printf("  saved      forward %.3f ms (%.2fx the forward) saving %.3g MB of checkpoints, "
                "then backward %.3f ms (%.2fx the forward); max |d - d_recomputed| / "
                "max |d_recomputed| = %s (worst: %s)\n",
                bw->savingForward.medianMs, bw->savingOverForward, bw->checkpointBytes * 1e-6,
                bw->fromCheckpoints.medianMs, bw->fromCheckpointsOverForward,
                sci(bw->maxRelDiffFromCheckpoints).c_str(), bw->worstFromCheckpoints.c_str());
    if (bw->gflops)
      std::printf("  work       backward from checkpoints %s GFLOP/s = %s%% of peak; its work is "
                  "%.2fx the forward's (%.0f against %.0f flops per token and head)\n",
                  fixed(*bw->gflops, 1).c_str(), fixed(100.0 * *bw->gflops / r.peakGflops, 1).c_str(),
                  *bw->workOverForward, *bw->flopsPerToken, *r.flopsPerToken);
    else
      std::printf("  work       unavailable (the module reports no backward_flops_per_token)\n");
    if (!bw->finite)
      std::printf("  warning: the backward's adjoints have NaN or infinite values\n");
    if (bw->referenceMs)
      std::printf("  reference backward %10.3f ms  scalar reverse sweep: module is %.2fx "
                  "faster; max |d - d_ref| / max |d_ref| = %s (worst: %s)\n",
                  *bw->referenceMs, *bw->speedupVsReference,
                  sci(*bw->maxRelDiffVsReference).c_str(), bw->worstOutput->c_str());
    else
      std::printf("  reference backward none: %s\n",
                  bw->referenceNote ? bw->referenceNote->c_str() : "");
  }
}

// ---------------------------------------------------------------------------------------
// CUDA

struct CudaResult : RunFigures {
  std::string deviceName, computeCapability, inputDtype;
  uint32_t blockThreads, sharedBytes;
  double bytesPerForward = 0.0, gbytesPerS = 0.0, copyGbytesPerS = 0.0;
  Number fractionOfCopyBandwidth;
  Number maxAbsDiffVsCpu, maxRelDiffVsCpu;
  std::string cpuNote;
  // --backward: miras_library_backward_cuda, against the cpu backward's adjoints.
  Number backwardMs, backwardOverForward, backwardMaxRelDiffVsCpu;
  std::optional<std::string> backwardWorstOutput, backwardNote;
};

void printCudaJson(const CudaResult &r) {
  JsonObject j;
  j.add("device", quote("cuda"));
  addRunFigures(j, r);
  j.add("device_name", quote(r.deviceName));
  j.add("compute_capability", quote(r.computeCapability));
  j.add("input_dtype", quote(r.inputDtype));
  j.add("block_threads", std::to_string(r.blockThreads));
  j.add("shared_bytes", std::to_string(r.sharedBytes));
  j.add("bytes_per_forward", jsonNumber(r.bytesPerForward));
  j.add("gbytes_per_s", jsonNumber(r.gbytesPerS));
  j.add("copy_gbytes_per_s", jsonNumber(r.copyGbytesPerS));
  j.add("fraction_of_copy_bandwidth", jsonNumber(r.fractionOfCopyBandwidth));
  j.add("max_abs_diff_vs_cpu", jsonNumber(r.maxAbsDiffVsCpu));
  j.add("max_rel_diff_vs_cpu", jsonNumber(r.maxRelDiffVsCpu));
  j.add("cpu_note", quote(r.cpuNote));
  if (r.backwardMs) { // --backward
    j.add("backward_ms", jsonNumber(r.backwardMs));
    j.add("backward_over_forward", jsonNumber(r.backwardOverForward));
    j.add("backward_max_rel_diff_vs_cpu", jsonNumber(r.backwardMaxRelDiffVsCpu));
    j.add("backward_worst_output", jsonText(r.backwardWorstOutput));
    j.add("backward_note", jsonText(r.backwardNote));
  }
  j.print();
}

void printCudaText(const CudaResult &r) {
  std::printf("miras bench: %s (%s)\n", r.module.c_str(), r.library.c_str());
  std::printf("  dk=%lld dv=%lld, chunk %lld; B=%lld T=%lld H=%lld; cuda on %s (cc %s), %s "
              "inputs, block %u threads, %u shared bytes; median of %lld after %lld warm-up\n",
              (long long)r.dk, (long long)r.dv, (long long)r.chunk, (long long)r.batch,
              (long long)r.length, (long long)r.heads, r.deviceName.c_str(),
              r.computeCapability.c_str(), r.inputDtype.c_str(), r.blockThreads, r.sharedBytes,
              (long long)r.repeat, (long long)r.warmup);
  std::printf("  module     %10.3f ms  (best %.3f)   %.3f Mtok/s   %s\n", r.timing.medianMs,
              r.timing.bestMs, r.tokensPerS * 1e-6,
              r.gflops ? (fixed(*r.gflops, 1) + " GFLOP/s").c_str()
                       : "GFLOP/s unavailable (the module reports no flops_per_token)");
  std::printf("  memory     %10.1f GB/s moved (%.3g MB per forward) = %.1f%% of the copy "
              "bandwidth\n",
              r.gbytesPerS, r.bytesPerForward * 1e-6,
              100.0 * r.fractionOfCopyBandwidth.value_or(0.0));
  std::printf("  copy       %10.1f GB/s device-to-device (read + write, measured)\n",
              r.copyGbytesPerS);
  if (!r.finite)
    std::printf("  warning: the module's output o has NaN or infinite values\n");
  if (r.maxAbsDiffVsCpu)
    std::printf("  cpu        max |o - o_cpu| = %s (relative %s); %s\n",
                sci(*r.maxAbsDiffVsCpu).c_str(), sci(*r.maxRelDiffVsCpu).c_str(),
                r.cpuNote.c_str());
  else
    std::printf("  cpu        none: %s\n", r.cpuNote.c_str());
  if (r.backwardMs)
    std::printf("  backward   %10.3f ms  %.2fx the forward; %s\n", *r.backwardMs,
                *r.backwardOverForward,
                r.backwardMaxRelDiffVsCpu
                    ? ("max |d - d_cpu| / max |d_cpu| = " + sci(*r.backwardMaxRelDiffVsCpu) +
                       " (worst: " + r.backwardWorstOutput.value_or("?") + ")").c_str()
                    : r.backwardNote.value_or("").c_str());
}

template <typename T>
size_t bytesOf(const std::vector<T> &x) {
  return x.size() * sizeof(T);
}

/// Random N(0, 1) values shaped like x, from `rng`.
std::vector<float> randomLike(const std::vector<float> &x, std::mt19937_64 &rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> y(x.size());
  for (float &value : y)
    value = normal(rng);
  return y;
}

/// One named float32 tensor of the runtime's API over `data`.
miras_tensor tensorOf(const Library &lib, const char *name, std::vector<float> &data,
                      const BenchOptions &opts) {
  miras_tensor t{};
  t.name = name;
  t.data = data.data();
  t.dtype = MIRAS_DTYPE_F32;
  std::vector<int64_t> shape = lib.shapeOf(name, opts.batch, opts.length, opts.heads);
  t.rank = static_cast<int32_t>(shape.size());
  std::copy(shape.begin(), shape.end(), t.shape);
  return t;
}

/// What a backward runs on, shared by the cpu and the cuda benches: the forward's inputs
/// in the order of their adjoints (q, k, v, the gates, the states) and random adjoints of
/// o and of the final states, N(0, 1) from a seed of their own.
struct BackwardProblem {
  std::vector<std::string> names;
  std::vector<std::vector<float> *> values;
  std::vector<float> dO;
  std::vector<std::vector<float>> dFinal;

  BackwardProblem(const miras_module_metadata &m, const BenchOptions &opts, Inputs &in) {
    names = {"q", "k", "v"};
    values = {&in.q, &in.k, &in.v};
    for (int32_t g = 0; g < m.num_gates; ++g)
      names.push_back(m.gates[g].name), values.push_back(&in.gates[g]);
    for (int32_t s = 0; s < m.num_states; ++s)
      names.push_back(m.states[s].name), values.push_back(&in.initialStates[s]);
    std::mt19937_64 rng(opts.seed + 1);
    dO = randomLike(in.o, rng);
    // The carried states' adjoints; a chunked module's final anchors and chunk position
    // get zeros (a loss of o and the weights, as the scalar reference computes it).
    for (int32_t s = 0; s < m.num_states; ++s)
      dFinal.push_back(m.states[s].role == MIRAS_STATE_CARRIED
                           ? randomLike(in.initialStates[s], rng)
                           : std::vector<float>(in.initialStates[s].size(), 0.0f));
  }

  /// Zeroed buffers for the adjoint of every input.
  std::vector<std::vector<float>> zeroGrads() const {
    std::vector<std::vector<float>> grads;
    for (std::vector<float> *x : values)
      grads.emplace_back(x->size(), 0.0f);
    return grads;
  }
};

/// One buffer per carried state for the checkpoints a forward saves ("W.checkpoints",
/// runtime.h), and the pointer array of miras_forward_args.checkpoints over them.
struct CheckpointBuffers {
  std::vector<std::string> names;
  std::vector<std::vector<float>> buffers;
  std::vector<float *> pointers;

  CheckpointBuffers(const Library &lib, const BenchOptions &opts) {
    const miras_module_metadata &m = lib.metadata();
    for (int32_t s = 0; s < m.num_states; ++s) {
      if (m.states[s].role != MIRAS_STATE_CARRIED)
        continue;
      names.push_back(std::string(m.states[s].name) + MIRAS_CHECKPOINTS_SUFFIX);
      buffers.push_back(allocateFloats(
          Tensor::numelOf(lib.shapeOf(names.back(), opts.batch, opts.length, opts.heads)),
          "checkpoints '" + names.back() + "'"));
    }
    for (std::vector<float> &b : buffers)
      pointers.push_back(b.data());
  }

  double bytes() const {
    double total = 0.0;
    for (const std::vector<float> &b : buffers)
      total += double(bytesOf(b));
    return total;
  }
};

/// miras_library_backward over a BackwardProblem's named tensors, writing `grads`.
struct CpuBackwardCall {
  std::vector<miras_tensor> inputs, adjoints, outputs;

  /// With `checkpoints` (CheckpointBuffers), the backward reads them.
  CpuBackwardCall(const Library &lib, const BenchOptions &opts, BackwardProblem &p,
                  std::vector<std::vector<float>> &grads,
                  CheckpointBuffers *checkpoints = nullptr) {
    for (size_t i = 0; i < p.names.size(); ++i) {
      inputs.push_back(tensorOf(lib, p.names[i].c_str(), *p.values[i], opts));
      outputs.push_back(tensorOf(lib, p.names[i].c_str(), grads[i], opts));
    }
    if (checkpoints)
      for (size_t i = 0; i < checkpoints->names.size(); ++i)
        inputs.push_back(
            tensorOf(lib, checkpoints->names[i].c_str(), checkpoints->buffers[i], opts));
    adjoints.push_back(tensorOf(lib, "o", p.dO, opts));
    const miras_module_metadata &m = lib.metadata();
    for (int32_t s = 0; s < m.num_states; ++s)
      adjoints.push_back(tensorOf(lib, m.states[s].name, p.dFinal[s], opts));
  }

  void run(Library &lib) const {
    miras_status status = miras_library_backward(
        lib.handle(), inputs.data(), static_cast<int32_t>(inputs.size()), adjoints.data(),
        static_cast<int32_t>(adjoints.size()), outputs.data(),
        static_cast<int32_t>(outputs.size()));
    if (status != MIRAS_OK)
      throw Error(status, miras_last_error());
  }
};

/// The largest max |got - want| / max |want| over the adjoints (NaN as infinity, so a
/// broken adjoint never looks exact), and the adjoint it is in ("dq", ...).
std::pair<double, std::string> worstRelativeDiff(const std::vector<std::string> &names,
                                                 const std::vector<std::vector<float>> &got,
                                                 const std::vector<std::vector<float>> &want) {
  double worst = -1.0;
  std::string where;
  for (size_t i = 0; i < names.size(); ++i) {
    double rel = maxAbsDiff(got[i], want[i]) / std::max(maxAbs(want[i]), 1e-30);
    if (!(rel <= worst)) {
      worst = std::isnan(rel) ? INFINITY : rel;
      where = "d" + names[i];
    }
  }
  return {worst, where};
}

/// `--device cuda --backward`: times miras_library_backward_cuda on the forward's device
/// inputs and compares its adjoints with the cpu backward's (miras_library_backward).
void benchCudaBackward(Library &lib, const BenchOptions &opts, Inputs &in, bench::Gpu &gpu,
                       const miras_forward_args &dev, CudaResult &r) {
  const miras_module_metadata &m = lib.metadata();
  if (m.cuda_backward == nullptr)
    throw Error(m.backward_segment > 0 ? MIRAS_ERR_DEVICE : MIRAS_ERR_UNSUPPORTED,
                "--backward: '" + opts.library + "' has no cuda backward kernel: rebuild "
                "module '" + m.name + "' with mirasc --backward --target=cpu,cuda");
  BackwardProblem p(m, opts, in);
  // The adjoints' device buffers, in the order of the inputs.
  std::vector<float *> grads;
  for (std::vector<float> *x : p.values)
    grads.push_back(static_cast<float *>(gpu.upload(nullptr, bytesOf(*x))));
  std::vector<const float *> dFinalDev;
  for (std::vector<float> &d : p.dFinal)
    dFinalDev.push_back(static_cast<const float *>(gpu.upload(d.data(), bytesOf(d))));
  const size_t G = size_t(m.num_gates);
  std::vector<float *> dGates(grads.begin() + 3, grads.begin() + 3 + G),
      dStates(grads.begin() + 3 + G, grads.end());
  miras_backward_args args{opts.batch, opts.length, opts.heads, dev.q, dev.k, dev.v,
                           dev.gates, dev.state_in,
                           static_cast<const float *>(gpu.upload(p.dO.data(), bytesOf(p.dO))),
                           dFinalDev.data(), grads[0], grads[1], grads[2], dGates.data(),
                           dStates.data()};
  Timing timing = timeRuns(opts.warmup, opts.repeat, [&] {
    miras_status status = miras_library_backward_cuda(lib.handle(), &args, nullptr);
    if (status != MIRAS_OK)
      throw Error(status, miras_last_error());
    gpu.synchronize();
  });
  r.backwardMs = timing.medianMs;
  r.backwardOverForward = timing.medianMs / r.timing.medianMs;
  if (!opts.reference || !hasTarget(m.targets, "cpu")) {
    r.backwardNote = opts.reference ? "no cpu target to compare with" : "skipped (--no-reference)";
    return;
  }
  std::vector<std::vector<float>> gotGrads = p.zeroGrads(), cpuGrads = p.zeroGrads();
  for (size_t i = 0; i < grads.size(); ++i)
    gpu.download(gotGrads[i].data(), grads[i], bytesOf(gotGrads[i]));
  lib.setNumThreads(static_cast<int32_t>(opts.threads));
  CpuBackwardCall(lib, opts, p, cpuGrads).run(lib);
  auto [worst, where] = worstRelativeDiff(p.names, gotGrads, cpuGrads);
  r.backwardMaxRelDiffVsCpu = worst;
  r.backwardWorstOutput = where;
}

int runBenchCuda(BenchOptions &opts, Library &lib) {
  const miras_module_metadata &m = lib.metadata();
  if (!lib.hasCuda())
    throw Error(MIRAS_ERR_DEVICE, "device cuda: '" + opts.library +
                                      "' has no cuda kernels (built with --target=" +
                                      m.targets + "); rebuild it with --target=cpu,cuda");
  bench::Gpu gpu; // throws with the reason when there is no driver or GPU
  const bool bf16 = opts.inputDtype == "bf16";
  Inputs in = makeInputs(lib, opts);
  // bfloat16 inputs, and their float32 values for the CPU cross-check.
  std::vector<std::vector<uint16_t>> half;
  auto toHalf = [&](std::vector<float> &x) {
    std::vector<uint16_t> h(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      h[i] = toBfloat16(x[i]);
      x[i] = fromBfloat16(h[i]);
    }
    half.push_back(std::move(h));
    return half.back().data();
  };
  double bytes = 0.0;
  auto upload = [&](std::vector<float> &x) -> const float * {
    if (!bf16) {
      bytes += double(bytesOf(x));
      return static_cast<const float *>(gpu.upload(x.data(), bytesOf(x)));
    }
    const uint16_t *h = toHalf(x);
    bytes += double(x.size() * sizeof(uint16_t));
    return static_cast<const float *>(gpu.upload(h, x.size() * sizeof(uint16_t)));
  };
  const float *q = upload(in.q), *k = upload(in.k), *v = upload(in.v);
  std::vector<const float *> gates, stateIn;
  std::vector<float *> stateOut;
  for (std::vector<float> &g : in.gates)
    gates.push_back(upload(g));
  for (size_t s = 0; s < in.initialStates.size(); ++s) {
    size_t n = bytesOf(in.initialStates[s]);
    stateIn.push_back(static_cast<const float *>(gpu.upload(in.initialStates[s].data(), n)));
    stateOut.push_back(static_cast<float *>(gpu.upload(nullptr, n)));
    bytes += 2.0 * double(n); // read and written once per forward
  }
  float *o = static_cast<float *>(gpu.upload(nullptr, bytesOf(in.o)));
  bytes += double(bytesOf(in.o));
  miras_forward_args dev{opts.batch, opts.length, opts.heads,   q,       k,
                         v,          gates.data(), stateIn.data(), stateOut.data(), o};
  const miras_dtype dtype = bf16 ? MIRAS_DTYPE_BF16 : MIRAS_DTYPE_F32;

  CudaResult r;
  r.module = m.name;
  r.library = opts.library;
  r.algorithm = m.algorithm;
  r.deviceName = gpu.name();
  r.computeCapability = gpu.computeCapability();
  r.inputDtype = opts.inputDtype;
  r.batch = opts.batch, r.length = opts.length, r.heads = opts.heads;
  r.dk = m.dk, r.dv = m.dv, r.chunk = m.chunk;
  r.blockThreads = m.cuda->block_threads, r.sharedBytes = m.cuda->shared_bytes;
  r.threads = opts.threads, r.repeat = opts.repeat, r.warmup = opts.warmup, r.seed = opts.seed;
  r.timing = timeRuns(opts.warmup, opts.repeat, [&] {
    lib.forwardCuda(dev, dtype, nullptr);
    gpu.synchronize();
  });
  gpu.download(in.o.data(), o, bytesOf(in.o));
  r.finite = allFinite(in.o);
  const double tokens = double(opts.batch) * double(opts.length);
  const double seconds = r.timing.medianMs * 1e-3;
  r.tokensPerS = tokens / seconds;
  if (m.flops_per_token > 0) {
    r.flopsPerToken = m.flops_per_token;
    r.gflops = m.flops_per_token * tokens * double(opts.heads) / seconds * 1e-9;
  }
  r.bytesPerForward = bytes;
  r.gbytesPerS = bytes / seconds * 1e-9;
  r.copyGbytesPerS = gpu.copyBandwidth() * 1e-9;
  if (r.copyGbytesPerS > 0)
    r.fractionOfCopyBandwidth = r.gbytesPerS / r.copyGbytesPerS;

  // The CPU forward on the same (for bf16: the rounded) inputs.
  if (!opts.reference) {
    r.cpuNote = "skipped (--no-reference)";
  } else if (!hasTarget(m.targets, "cpu")) {
    r.cpuNote = std::string("the module has no cpu target (targets ") + m.targets + ")";
  } else {
    std::vector<const float *> hostGates, hostIn;
    std::vector<float *> hostOut;
    std::vector<float> cpuO(in.o.size());
    for (const std::vector<float> &g : in.gates)
      hostGates.push_back(g.data());
    for (size_t s = 0; s < in.initialStates.size(); ++s) {
      hostIn.push_back(in.initialStates[s].data());
      hostOut.push_back(in.finalStates[s].data());
    }
    miras_forward_args host{opts.batch,       opts.length,   opts.heads,     in.q.data(),
                            in.k.data(),      in.v.data(),   hostGates.data(), hostIn.data(),
                            hostOut.data(),   cpuO.data()};
    lib.setNumThreads(static_cast<int32_t>(opts.threads));
    runForward(lib, host);
    r.maxAbsDiffVsCpu = maxAbsDiff(in.o, cpuO);
    r.maxRelDiffVsCpu = *r.maxAbsDiffVsCpu / std::max(maxAbs(cpuO), 1e-30);
    r.cpuNote = "the module's cpu kernel, " + std::to_string(opts.threads) + " thread" +
                (opts.threads == 1 ? "" : "s");
  }
  if (opts.backward)
    benchCudaBackward(lib, opts, in, gpu, dev, r);
  if (opts.json)
    printCudaJson(r);
  else
    printCudaText(r);
  return 0;
}

/// `--backward`: times miras_library_backward on the forward's inputs, and the scalar
/// reverse sweep when the module has a reference.
BackwardFigures benchBackward(Library &lib, const BenchOptions &opts, Inputs &in,
                              const miras_forward_args &forwardArgs,
                              const std::optional<bench::ReferenceModel> &reference,
                              const bench::Problem &problem) {
  const miras_module_metadata &m = lib.metadata();
  if (m.backward_segment <= 0)
    throw Error(MIRAS_ERR_UNSUPPORTED, "--backward: '" + opts.library +
                                           "' has no backward pass: rebuild module '" +
                                           m.name + "' with mirasc --backward");
  BackwardFigures bw;
  bw.segment = m.backward_segment;
  const int64_t T = opts.length, pairs = opts.batch * opts.heads;
  // The checkpoints of the chunk-aligned time (miras_abi.h backward_segment).
  bw.statesPerPair = (T - 1 + m.chunk - 1) / bw.segment + 1 + bw.segment;
  bw.allStatesPerPair = T;
  double stateBytes = 0.0; // of one pair, every carried state
  for (int32_t s = 0; s < m.num_states; ++s)
    if (m.states[s].role == MIRAS_STATE_CARRIED)
      stateBytes += double(bytesOf(in.initialStates[s])) / double(pairs);
  const int64_t inFlight = std::min<int64_t>(opts.threads, pairs);
  bw.savedBytes = double(inFlight) * double(bw.statesPerPair) * stateBytes;

  BackwardProblem p(m, opts, in);
  std::vector<std::vector<float>> grads = p.zeroGrads();
  CpuBackwardCall call(lib, opts, p, grads);
  // The training step's pair, on the same inputs: the forward saves the checkpoints
  // (its outputs are the plain forward's), the backward reads them.
  CheckpointBuffers checkpoints(lib, opts);
  miras_forward_args saving = forwardArgs;
  saving.checkpoints = checkpoints.pointers.data();
  std::vector<std::vector<float>> givenGrads = p.zeroGrads();
  CpuBackwardCall fromCheckpoints(lib, opts, p, givenGrads, &checkpoints);
  // One round: the forward, the backward, the saving forward, the backward from its
  // checkpoints; every ratio to the forward is taken within a round (timeRounds).
  std::vector<std::vector<double>> ms = timeRounds(
      opts.warmup, opts.repeat,
      {[&] { runForward(lib, forwardArgs); }, [&] { call.run(lib); },
       [&] { runForward(lib, saving); },
       [&] { fromCheckpoints.run(lib); }});
  bw.roundsForward = summarize(ms[0]);
  bw.timing = summarize(ms[1]);
  bw.overForward = pairedRatio(ms[1], ms[0]);
  bw.savingForward = summarize(ms[2]);
  bw.savingOverForward = pairedRatio(ms[2], ms[0]);
  bw.fromCheckpoints = summarize(ms[3]);
  bw.fromCheckpointsOverForward = pairedRatio(ms[3], ms[0]);
  bw.checkpointBytes = checkpoints.bytes();
  for (const std::vector<float> &g : grads)
    bw.finite = bw.finite && allFinite(g);
  if (m.backward_flops_per_token > 0 && m.flops_per_token > 0) {
    bw.flopsPerToken = m.backward_flops_per_token;
    bw.gflops = m.backward_flops_per_token * double(pairs) * double(T) /
                (bw.fromCheckpoints.medianMs * 1e-3) * 1e-9;
    bw.workOverForward = m.backward_flops_per_token / m.flops_per_token;
  }
  std::tie(bw.maxRelDiffFromCheckpoints, bw.worstFromCheckpoints) =
      worstRelativeDiff(p.names, givenGrads, grads);

  if (!opts.reference) {
    bw.referenceNote = "skipped (--no-reference)";
    return bw;
  }
  if (!reference) {
    bw.referenceNote = "no scalar reference for this module (see reference above)";
    return bw;
  }
  std::vector<std::vector<float>> refGrads = p.zeroGrads();
  bench::ReferenceAdjoints d;
  d.o = p.dO.data();
  d.dq = refGrads[0].data(), d.dk = refGrads[1].data(), d.dv = refGrads[2].data();
  for (int32_t g = 0; g < m.num_gates; ++g)
    d.gates.push_back(refGrads[3 + g].data());
  for (int32_t s = 0; s < m.num_states; ++s) {
    d.finalStates.push_back(p.dFinal[s].data());
    d.initialStates.push_back(refGrads[3 + m.num_gates + s].data());
  }
  const int threads = static_cast<int>(opts.threads);
  Timing t = timeRuns(0, 1, [&] {
    bench::forEachPairRange(pairs, threads, [&](int64_t begin, int64_t end) {
      bench::runReferenceBackward(*reference, problem, d, bw.segment, begin, end);
    });
  });
  bw.referenceMs = t.medianMs;
  bw.speedupVsReference = t.medianMs / bw.timing.medianMs;
  auto [worst, where] = worstRelativeDiff(p.names, grads, refGrads);
  bw.maxRelDiffVsReference = worst;
  bw.worstOutput = where;
  bw.referenceNote = std::string("scalar loops, ") + std::to_string(threads) + " thread" +
                     (threads == 1 ? "" : "s");
  return bw;
}

} // namespace

/// The sequence of `in` as T calls of one token, every state carried in place (a
/// decode loop); in.o holds the whole call's o.
DecodeFigures benchDecode(Library &lib, const BenchOptions &opts, const Inputs &in,
                          double wholeMs) {
  const int64_t B = opts.batch, T = opts.length, H = opts.heads;
  // Token t of every batch row, contiguous: [T][B, 1, H, ...].
  auto byToken = [&](const std::vector<float> &x) {
    const size_t row = x.size() / size_t(B * T); // one token of one sequence: H * ...
    std::vector<float> y(x.size());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t b = 0; b < B; ++b)
        std::copy_n(x.begin() + ptrdiff_t((b * T + t) * row), row,
                    y.begin() + ptrdiff_t((t * B + b) * row));
    return y;
  };
  std::vector<float> q = byToken(in.q), k = byToken(in.k), v = byToken(in.v);
  std::vector<std::vector<float>> gates;
  for (const std::vector<float> &g : in.gates)
    gates.push_back(byToken(g));
  std::vector<std::vector<float>> states = in.initialStates;
  std::vector<float> o(in.o.size());
  const size_t qRow = q.size() / size_t(T), kRow = k.size() / size_t(T),
               vRow = v.size() / size_t(T), oRow = o.size() / size_t(T);
  std::vector<const float *> gatePtrs(gates.size()), stateIn(states.size());
  std::vector<float *> stateOut(states.size());
  DecodeFigures d;
  d.timing = timeRuns(opts.warmup, opts.repeat, [&] {
    for (size_t s = 0; s < states.size(); ++s) {
      states[s] = in.initialStates[s];
      stateIn[s] = stateOut[s] = states[s].data();
    }
    for (int64_t t = 0; t < T; ++t) {
      for (size_t g = 0; g < gates.size(); ++g)
        gatePtrs[g] = gates[g].data() + size_t(t) * (gates[g].size() / size_t(T));
      miras_forward_args args{B, 1, H,
                              q.data() + size_t(t) * qRow, k.data() + size_t(t) * kRow,
                              v.data() + size_t(t) * vRow, gatePtrs.data(), stateIn.data(),
                              stateOut.data(), o.data() + size_t(t) * oRow};
      runForward(lib, args);
    }
  });
  d.msPerToken = d.timing.medianMs / double(T);
  d.overWhole = d.msPerToken / (wholeMs / double(T));
  std::vector<float> wholeByToken = byToken(in.o);
  d.maxRelDiff = maxAbsDiff(o, wholeByToken) / std::max(maxAbs(wholeByToken), 1e-30);
  return d;
}

int runBench(const Args &args) {
  BenchOptions opts = parseOptions(args);
  Library lib = Library::open(opts.library);
  const miras_module_metadata &m = lib.metadata();
  if (opts.threads == 0)
    opts.threads = std::max(1u, std::thread::hardware_concurrency());
  if (opts.device == "cuda")
    return runBenchCuda(opts, lib);
  if (!hasTarget(m.targets, "cpu"))
    throw Error(MIRAS_ERR_DEVICE, "device cpu: '" + opts.library +
                                      "' was built for cuda only; use --device cuda");
  lib.setNumThreads(static_cast<int32_t>(opts.threads));
  const int threads = static_cast<int>(opts.threads);

  Inputs in = makeInputs(lib, opts);
  std::vector<const float *> gatePtrs, stateIn;
  std::vector<float *> stateOut;
  for (const std::vector<float> &g : in.gates)
    gatePtrs.push_back(g.data());
  for (size_t s = 0; s < in.initialStates.size(); ++s) {
    stateIn.push_back(in.initialStates[s].data());
    stateOut.push_back(in.finalStates[s].data());
  }
  miras_forward_args forwardArgs{opts.batch,     opts.length,     opts.heads,
                                 in.q.data(),    in.k.data(),     in.v.data(),
                                 gatePtrs.data(), stateIn.data(), stateOut.data(),
                                 in.o.data()};

  Result r;
  r.module = m.name;
  r.library = opts.library;
  r.algorithm = m.algorithm;
  r.batch = opts.batch, r.length = opts.length, r.heads = opts.heads;
  r.dk = m.dk, r.dv = m.dv, r.chunk = m.chunk;
  r.threads = opts.threads, r.repeat = opts.repeat, r.warmup = opts.warmup, r.seed = opts.seed;

  r.timing = timeRuns(opts.warmup, opts.repeat, [&] { runForward(lib, forwardArgs); });
  r.finite = allFinite(in.o);
  const double tokens = double(opts.batch) * double(opts.length);
  const double seconds = r.timing.medianMs * 1e-3;
  r.tokensPerS = tokens / seconds;
  bench::PeakResult peak = bench::measurePeakGflops(threads);
  r.peakGflops = peak.gflops;
  r.peakIsa = peak.isa;
  if (m.flops_per_token > 0) {
    r.flopsPerToken = m.flops_per_token;
    r.gflops = m.flops_per_token * tokens * double(opts.heads) / seconds * 1e-9;
    r.fractionOfPeak = *r.gflops / r.peakGflops;
  }

  // The reference and the baseline see the same tensors (a linear state W is state 0).
  bench::Problem problem;
  problem.batch = opts.batch, problem.length = opts.length, problem.heads = opts.heads;
  problem.dk = m.dk, problem.dv = m.dv;
  problem.q = in.q.data(), problem.k = in.k.data(), problem.v = in.v.data();
  problem.gates = gatePtrs;
  problem.initialStates = stateIn;
  const int64_t pairs = opts.batch * opts.heads;

  std::string why;
  std::optional<bench::ReferenceModel> reference;
  std::vector<float> referenceO;
  if (!opts.reference)
    r.referenceNote = "skipped (--no-reference)";
  else if (!(reference = bench::findReference(m, &why)))
    r.referenceNote = why;
  else {
    referenceO.assign(in.o.size(), 0.0f);
    std::vector<std::vector<float>> referenceStates;
    std::vector<float *> referenceStatePtrs;
    for (const std::vector<float> &state : in.finalStates)
      referenceStates.emplace_back(state.size());
    for (std::vector<float> &state : referenceStates)
      referenceStatePtrs.push_back(state.data());
    Timing t = timeRuns(0, 1, [&] {
      bench::forEachPairRange(pairs, threads, [&](int64_t begin, int64_t end) {
        bench::runReference(*reference, problem, referenceO.data(), referenceStatePtrs, begin,
                            end);
      });
    });
    r.referenceModel = reference->name;
    r.referenceMs = t.medianMs;
    r.speedupVsReference = t.medianMs / r.timing.medianMs;
    r.maxAbsDiffVsReference = maxAbsDiff(in.o, referenceO);
    r.maxRelDiffVsReference = *r.maxAbsDiffVsReference / std::max(maxAbs(referenceO), 1e-30);
    r.referenceNote = std::string("scalar loops, ") + std::to_string(threads) + " thread" +
                      (threads == 1 ? "" : "s");
  }

  bench::GatedDeltaNetGates gdn;
  if (!bench::matchGatedDeltaNet(m, &gdn, &why)) {
    r.baselineNote = why;
  } else {
    std::vector<float> baselineO(in.o.size()), baselineState(in.finalStates[0].size());
    Timing t = timeRuns(opts.warmup, opts.repeat, [&] {
      bench::forEachPairRange(pairs, threads, [&](int64_t begin, int64_t end) {
        bench::runGatedDeltaNetBaseline(problem, gdn, baselineO.data(), baselineState.data(),
                                        begin, end);
      });
    });
    r.baselineMs = t.medianMs;
    r.speedupVsBaseline = t.medianMs / r.timing.medianMs;
    r.baselineIsa = bench::baselineIsa();
    // The baseline is the exact sequential recurrence: comparable with the reference
    // only when the module (and so the reference) has chunk 1.
    if (!referenceO.empty() && m.chunk == 1)
      r.baselineMaxAbsDiffVsReference = maxAbsDiff(baselineO, referenceO);
    else if (m.chunk != 1)
      r.baselineNote = "the baseline is sequential (C = 1), the module has chunk " +
                       std::to_string(m.chunk) + ": outputs not compared";
  }

  if (opts.decode)
    r.decode = benchDecode(lib, opts, in, r.timing.medianMs);
  if (opts.backward)
    r.backward =
        benchBackward(lib, opts, in, forwardArgs, reference, problem);

  if (opts.json)
    printJson(r);
  else
    printText(r);
  return 0;
}

} // namespace miras::cli
