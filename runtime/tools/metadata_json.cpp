// metadata_json.cpp: the JSON writer of metadata_json.hpp.
#include "metadata_json.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "gate_sampling.hpp"

namespace miras::cli {

namespace {

std::string quote(const std::string &s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// JSON has no NaN or infinity; integers print without a fraction.
std::string number(double value, bool integer) {
  if (!std::isfinite(value))
    return "null";
  char buf[32];
  if (integer && std::fabs(value) < 9e18) // the cast is undefined beyond int64
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(value));
  else
    std::snprintf(buf, sizeof buf, "%.17g", value);
  return buf;
}

std::string param(const miras_param_info &p) {
  return "{\"name\": " + quote(p.name) + ", \"value\": " + number(p.value, p.is_integer) +
         ", \"integer\": " + (p.is_integer ? "true" : "false") + "}";
}

// A bound as text: the shortest spelling that reads back as the same double.
std::string bound(double x) {
  char buf[32];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, x);
    if (std::strtod(buf, nullptr) == x)
      break;
  }
  return buf;
}

// The declared range: null when none; otherwise its interval notation and its ends
// (null for an unbounded end: JSON has no infinity) with their closedness.
std::string range(const miras_gate_info &g) {
  if (!g.has_range)
    return "null";
  auto end = [](double x) { return std::isinf(x) ? std::string("null") : bound(x); };
  auto text = [](double x) {
    return std::isinf(x) ? std::string(x < 0 ? "-inf" : "inf") : bound(x);
  };
  std::string notation = std::string(g.range_lo_closed ? "[" : "(") + text(g.range_lo) + ", " +
                         text(g.range_hi) + (g.range_hi_closed ? "]" : ")");
  return "{\"text\": " + quote(notation) + ", \"lo\": " + end(g.range_lo) +
         ", \"hi\": " + end(g.range_hi) +
         ", \"lo_closed\": " + (g.range_lo_closed ? "true" : "false") +
         ", \"hi_closed\": " + (g.range_hi_closed ? "true" : "false") + "}";
}

// The interval `miras bench` and the tests draw the gate from (gate_sampling.hpp).
std::string sample(const miras_gate_info &g) {
  SampleInterval s = sampleInterval(g);
  return "[" + bound(s.lo) + ", " + bound(s.hi) + "]";
}

std::string gate(const miras_gate_info &g) {
  bool scalar = g.kind == MIRAS_GATE_SCALAR;
  const char *axis = scalar ? "null" : g.axis == MIRAS_AXIS_KEY ? "\"dk\"" : "\"dv\"";
  const char *shape = g.per_step ? "[B,T,H,steps]"
                      : scalar   ? "[B,T,H]"
                      : g.axis == MIRAS_AXIS_KEY ? "[B,T,H,Dk]" : "[B,T,H,Dv]";
  return "{\"name\": " + quote(g.name) + ", \"kind\": \"" + (scalar ? "scalar" : "channel") +
         "\", \"axis\": " + axis + ", \"dim\": " + std::to_string(g.dim) +
         ", \"per_step\": " + (g.per_step ? "true" : "false") + ", \"shape\": \"" + shape +
         "\", \"range\": " + range(g) + ", \"sample\": " + sample(g) + "}";
}

std::string initText(const miras_state_info &s) {
  static const char *const inits[] = {"zeros", "identity", "uniform", "normal"};
  std::string text = inits[s.init];
  if (s.init == MIRAS_INIT_NORMAL)
    text += "(" + number(s.init_scale, false) + ", seed = " + std::to_string(s.init_seed) + ")";
  else if (s.init != MIRAS_INIT_ZEROS)
    text += "(" + number(s.init_scale, false) + ")";
  return text;
}

std::string state(const miras_state_info &s) {
  std::string dims;
  for (int32_t i = 0; i < s.rank; ++i)
    dims += (i ? ", " : "") + std::to_string(s.shape[i]);
  static const char *const roles[] = {"carried", "anchor", "chunk_position"};
  static const char *const inits[] = {"zeros", "identity", "uniform", "normal"};
  std::string json = "{\"name\": " + quote(s.name) + ", \"shape\": [" + dims +
                     "], \"role\": \"" + roles[s.role] + "\"";
  if (s.role == MIRAS_STATE_ANCHOR)
    json += ", \"anchor_of\": " + std::to_string(s.anchor_of);
  json += ", \"init\": \"" + std::string(inits[s.init]) + "\"";
  if (s.init != MIRAS_INIT_ZEROS)
    json += ", \"init_scale\": " + number(s.init_scale, false);
  if (s.init == MIRAS_INIT_NORMAL)
    json += ", \"init_seed\": " + std::to_string(s.init_seed);
  return json + "}";
}

// "cpu,cuda" -> ["cpu", "cuda"]
std::string targets(const std::string &list) {
  std::string out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = std::min(list.find(',', start), list.size());
    std::string item = list.substr(start, end - start);
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (!item.empty())
      out += (out.empty() ? "" : ", ") + quote(item);
    start = end + 1;
  }
  return "[" + out + "]";
}

std::string cuda(const miras_cuda_binary *c) {
  if (c == nullptr)
    return "null";
  return "{\"arch\": " + quote(c->arch) + ", \"cubin\": " + (c->cubin ? "true" : "false") +
         ", \"cubin_bytes\": " + std::to_string(c->cubin_size) +
         ", \"ptx_bytes\": " + std::to_string(std::strlen(c->ptx)) +
         ", \"kernel_f32\": " + quote(c->kernel_f32) +
         ", \"kernel_bf16\": " + (c->kernel_bf16 ? quote(c->kernel_bf16) : "null") +
         ", \"block_threads\": " + std::to_string(c->block_threads) +
         ", \"shared_bytes\": " + std::to_string(c->shared_bytes) +
         ", \"workspace_bytes\": " + std::to_string(c->workspace_bytes) + "}";
}

template <typename T, typename F>
std::string array(const T *items, int32_t n, F format) {
  if (n == 0)
    return "[]";
  std::string out = "[\n";
  for (int32_t i = 0; i < n; ++i)
    out += "    " + format(items[i]) + (i + 1 < n ? ",\n" : "\n");
  return out + "  ]";
}

} // namespace

std::string initialStateText(const miras_state_info &s) {
  if (s.role != MIRAS_STATE_CARRIED || s.init == MIRAS_INIT_ZEROS)
    return "zeros";
  return "its declared init " + initText(s);
}

std::string metadataJson(const miras_module_metadata &m) {
  std::string json = "{\n";
  json += "  \"name\": " + quote(m.name) + ",\n";
  json += "  \"source\": " + quote(m.source) + ",\n";
  json += "  \"compiler\": " + quote(m.compiler) + ",\n";
  json += "  \"abi_version\": " + std::to_string(m.abi_version) + ",\n";
  json += "  \"dk\": " + std::to_string(m.dk) + ",\n";
  json += "  \"dv\": " + std::to_string(m.dv) + ",\n";
  json += "  \"chunk\": " + std::to_string(m.chunk) + ",\n";
  json += "  \"steps\": " + std::to_string(m.steps) + ",\n";
  json += "  \"algorithm\": " + quote(m.algorithm) + ",\n";
  json += "  \"flops_per_token\": " + number(m.flops_per_token, std::floor(m.flops_per_token) == m.flops_per_token) + ",\n";
  json += std::string("  \"read\": \"") + (m.read_after_write ? "after_write" : "before_write") +
          "\",\n";
  json += "  \"params\": " + array(m.params, m.num_params, param) + ",\n";
  json += "  \"gates\": " + array(m.gates, m.num_gates, gate) + ",\n";
  json += "  \"states\": " + array(m.states, m.num_states, state) + ",\n";
  json += "  \"targets\": " + targets(m.targets) + ",\n";
  json += "  \"backward_segment\": " + std::to_string(m.backward_segment) + ",\n";
  json += "  \"backward_flops_per_token\": " +
          number(m.backward_flops_per_token,
                 std::floor(m.backward_flops_per_token) == m.backward_flops_per_token) +
          ",\n";
  json += "  \"cuda\": " + cuda(m.cuda) + ",\n";
  json += "  \"cuda_backward\": " + cuda(m.cuda_backward) + ",\n";
  json += "  \"rule\": " + quote(m.rule) + "\n}\n";
  return json;
}

} // namespace miras::cli
