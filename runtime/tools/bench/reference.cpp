// reference.cpp: scalar reference implementations of the linear-memory models of SPEC
// section 6 (linear attention, RetNet, Mamba2, GLA, DeltaNet, Gated DeltaNet, TTT-Linear),
// and the recognition of a module as one of them, or as one of the MLP memories of
// reference_mlp.cpp, by its derived update rule.
//
// The loops are the recurrences of the SPEC table typed in literally, one token at a
// time, W stored as in SPEC section 8 ([dv, dk], f(W; k) = W k), with the chunk rule of
// section 7: every gradient is evaluated at W_a, the state at the start of the token's
// chunk (C = 1 is the exact sequential recurrence); for Gated DeltaNet (decay before the
// gradient) the residual is alpha_t W_a k_t - v_t, the convention of
// test/numeric/reference.py. Reads follow the module (after or before the write).
//
// This file is compiled WITHOUT auto-vectorisation (see runtime/CMakeLists.txt:
// -fno-tree-vectorize for GCC, -fno-vectorize -fno-slp-vectorize for Clang), so its
// timing is that of genuinely scalar code: it is the "x vs reference" of `miras bench`.
#include "reference.hpp"
#include "reference_mlp.hpp"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <vector>

namespace miras::bench {

namespace {

// ---------------------------------------------------------------------------------------
// Recognising a module by its structure: the derived update rule in the metadata
// (`mirasc --emit=rule`, e.g. "W' = alpha * W - (eta * ((alpha * W) k - v)) k^T") is
// matched against the rule of each reference, with placeholders for the gates that play
// a role, so the module's name and its gates' names do not matter.
//
// Placeholders: {decay} a scalar gate, {decay_keys} a key-axis channel gate (both the
// decay, alphaGate), {lr} a scalar gate (etaGate), {beta} a scalar gate (momentumGate),
// {const} a number (the rule prints constants with %g; a param printing the same
// supplies the exact value), {eps} the LayerNorm's epsilon, {dim} the number dv (a
// mean's divisor), {Wa} the state the gradient reads: W, or W_anchor with chunks (SPEC
// section 7); {W1a}, {W2a} likewise for an MLP's weights.

struct RulePattern {
  ReferenceKind kind;
  const char *name;
  const char *update; // the first line of the rule, W' = ...
};

const RulePattern kPatterns[] = {
    {ReferenceKind::LinearAttention, "linear_attention", "W' = W + v k^T"},
    {ReferenceKind::RetNet, "retnet", "W' = W * {const} + v k^T"},
    {ReferenceKind::Mamba2, "mamba2", "W' = {decay} * W + v k^T"},
    {ReferenceKind::Gla, "gla", "W' = {decay_keys}[j] * W + v k^T"},
    {ReferenceKind::DeltaNet, "deltanet", "W' = W - ({lr} * ({Wa} k - v)) k^T"},
    {ReferenceKind::GatedDeltaNet, "gated_deltanet",
     "W' = {decay} * W - ({lr} * (({decay} * {Wa}) k - v)) k^T"},
    {ReferenceKind::TttLinear, "ttt_linear", "W' = W - (({Wa} k - v) * {const}) k^T"},
};

bool isIdentChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_';
}

int gateIndex(const miras_module_metadata &meta, const std::string &name) {
  for (int32_t i = 0; i < meta.num_gates; ++i)
    if (name == meta.gates[i].name)
      return i;
  return -1;
}

// The constant of a rule: a param's exact value when one prints the same with %g.
double exactConstant(const miras_module_metadata &meta, const std::string &text) {
  for (int32_t i = 0; i < meta.num_params; ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", meta.params[i].value);
    if (text == buf)
      return meta.params[i].value;
  }
  return std::strtod(text.c_str(), nullptr);
}

// Matches `rule` against `pattern` whole, binding the placeholders into `model`
// (a placeholder seen twice must bind the same gate).
bool matchRule(const miras_module_metadata &meta, const std::string &pattern,
               const std::string &rule, ReferenceModel &model) {
  size_t p = 0, r = 0;
  while (p < pattern.size()) {
    if (pattern[p] != '{') {
      if (r >= rule.size() || rule[r] != pattern[p])
        return false;
      ++p, ++r;
      continue;
    }
    const size_t close = pattern.find('}', p);
    const std::string hole = pattern.substr(p + 1, close - p - 1);
    p = close + 1;
    if (hole == "Wa" || hole == "W1a" || hole == "W2a") {
      // The weight, or its anchor: {W1a} is W1 or W1_anchor.
      const std::string weight = hole.substr(0, hole.size() - 1);
      const std::string anchor = weight + "_anchor";
      auto matchesWord = [&](const std::string &word) {
        return rule.compare(r, word.size(), word) == 0 &&
               (r + word.size() == rule.size() || !isIdentChar(rule[r + word.size()]));
      };
      if (matchesWord(anchor))
        r += anchor.size();
      else if (matchesWord(weight))
        r += weight.size();
      else
        return false;
      continue;
    }
    if (hole == "const" || hole == "eps" || hole == "dim") {
      size_t end = r;
      while (end < rule.size() && (std::isdigit(static_cast<unsigned char>(rule[end])) ||
                                   rule[end] == '.' || rule[end] == 'e' ||
                                   ((rule[end] == '-' || rule[end] == '+') && end > r &&
                                    rule[end - 1] == 'e')))
        ++end;
      if (end == r)
        return false;
      const std::string number = rule.substr(r, end - r);
      if (hole == "dim" && number != std::to_string(meta.dv))
        return false;
      const float value = static_cast<float>(exactConstant(meta, number));
      if (hole == "const")
        model.constant = value;
      else if (hole == "eps")
        model.mlp.epsilon = value;
      r = end;
      continue;
    }
    // A gate placeholder: an identifier naming a gate of the right kind.
    size_t end = r;
    while (end < rule.size() && isIdentChar(rule[end]))
      ++end;
    const int index = end > r ? gateIndex(meta, rule.substr(r, end - r)) : -1;
    if (index < 0 || meta.gates[index].per_step)
      return false;
    const miras_gate_info &gate = meta.gates[index];
    const bool keys = gate.kind == MIRAS_GATE_CHANNEL && gate.axis == MIRAS_AXIS_KEY;
    int *slot = hole == "lr"     ? &model.etaGate
                : hole == "beta" ? &model.momentumGate
                                 : &model.alphaGate;
    const bool kindOk = hole == "decay_keys" ? keys : gate.kind == MIRAS_GATE_SCALAR;
    if (!kindOk || (*slot >= 0 && *slot != index))
      return false;
    *slot = index;
    r = end;
  }
  return r == rule.size();
}

// The MLP memories: the whole rule (every state's update, the read, the shared terms),
// read after the write, with the gates, the LayerNorm's epsilon and the weights the
// gradient reads ({W1a}: W1, or W1_anchor with chunks) as placeholders.
struct MlpPattern {
  ReferenceKind kind;
  const char *name;
  MlpActivation activation;
  bool residual, layerNorm, momentum;
  const char *rule;
};

const MlpPattern kMlpPatterns[] = {
    {ReferenceKind::Titans, "titans", MlpActivation::Silu, false, false, true,
     "W1' = {decay} * W1 + S1'\n"
     "W2' = {decay} * W2 + S2'\n"
     "S1' = {beta} * S1 - {lr} * (t1 / (exp(-(W1 k)) + 1) + t1 * W1 k / (exp(-(W1 k)) + 1) "
     "/ (exp(-(W1 k)) + 1) * exp(-(W1 k))) k^T\n"
     "S2' = {beta} * S2 - {lr} * (W2 (W1 k / (exp(-(W1 k)) + 1)) - v) "
     "(W1 k / (exp(-(W1 k)) + 1))^T\n"
     "o = W2' (W1' q / (exp(-(W1' q)) + 1))\n"
     "where\n"
     "  t1 = W2^T (W2 (W1 k / (exp(-(W1 k)) + 1)) - v)"},
    {ReferenceKind::TttMlp, "ttt_mlp", MlpActivation::GeluTanh, true, true, false,
     "W1' = W1 - ({lr} * ({W2a}^T (t4 - sum(t4) / {dim}) * t1 * 0.5 + t5 * 0.398942 + "
     "t5 * {W1a} k * {W1a} k * 0.0535161)) k^T\n"
     "W2' = W2 - ({lr} * (t4 - sum(t4) / {dim})) ({W1a} k * t1 * 0.5)^T\n"
     "o = q + (t6 - sum(t6) / {dim}) / sqrt(sum((t6 - sum(t6) / {dim}) * (t6 - sum(t6) / "
     "{dim})) / {dim} + {eps})\n"
     "where\n"
     "  t1 = tanh(({W1a} k + {W1a} k * {W1a} k * {W1a} k * 0.044715) * 0.797885) + 1\n"
     "  t2 = {W2a} ({W1a} k * t1 * 0.5) - sum({W2a} ({W1a} k * t1 * 0.5)) / {dim}\n"
     "  t3 = k + t2 / sqrt(sum(t2 * t2) / {dim} + {eps}) - v\n"
     "  t4 = t3 / sqrt(sum(t2 * t2) / {dim} + {eps}) + select(sqrt(sum(t2 * t2) / {dim} + "
     "{eps}) ogt 0, sum(t3 * t2 / sqrt(sum(t2 * t2) / {dim} + {eps}) / sqrt(sum(t2 * t2) / "
     "{dim} + {eps})) / sqrt(sum(t2 * t2) / {dim} + {eps}) * -0.5, 0) / {dim} * t2 * 2\n"
     "  t5 = {W2a}^T (t4 - sum(t4) / {dim}) * {W1a} k * (1 - tanh(({W1a} k + {W1a} k * "
     "{W1a} k * {W1a} k * 0.044715) * 0.797885) * tanh(({W1a} k + {W1a} k * {W1a} k * "
     "{W1a} k * 0.044715) * 0.797885))\n"
     "  t6 = W2' (W1' q * (tanh((W1' q + W1' q * W1' q * W1' q * 0.044715) * 0.797885) + 1) "
     "* 0.5)"},
    // Titans with chunks (SPEC section 7): the rule prints the residual as its own term.
    {ReferenceKind::Titans, "titans", MlpActivation::Silu, false, false, true,
     "W1' = {decay} * W1 + S1'\n"
     "W2' = {decay} * W2 + S2'\n"
     "S1' = {beta} * S1 - {lr} * (W2_anchor^T t1 / (exp(-(W1_anchor k)) + 1) + W2_anchor^T t1 "
     "* W1_anchor k / (exp(-(W1_anchor k)) + 1) / (exp(-(W1_anchor k)) + 1) * "
     "exp(-(W1_anchor k))) k^T\n"
     "S2' = {beta} * S2 - {lr} * t1 (W1_anchor k / (exp(-(W1_anchor k)) + 1))^T\n"
     "o = W2' (W1' q / (exp(-(W1' q)) + 1))\n"
     "where\n"
     "  t1 = W2_anchor (W1_anchor k / (exp(-(W1_anchor k)) + 1)) - v"},
};

int stateIndex(const miras_module_metadata &meta, const char *name) {
  for (int32_t s = 0; s < meta.num_states; ++s)
    if (std::strcmp(meta.states[s].name, name) == 0)
      return s;
  return -1;
}

bool hasShape(const miras_state_info &state, int64_t rows, int64_t cols) {
  return state.role == MIRAS_STATE_CARRIED && state.rank == 2 && state.shape[0] == rows &&
         state.shape[1] == cols;
}

// A two-layer MLP memory (states W1 [hidden, dk], W2 [dv, hidden], and S1, S2 shaped
// alike with momentum) whose whole rule is one of kMlpPatterns.
std::optional<ReferenceModel> findMlpReference(const miras_module_metadata &meta,
                                               std::string *whyNot) {
  const std::string name = meta.name;
  const int w1 = stateIndex(meta, "W1"), w2 = stateIndex(meta, "W2");
  const int s1 = stateIndex(meta, "S1"), s2 = stateIndex(meta, "S2");
  const int64_t hidden = meta.states[w1].shape[0];
  const bool momentum = s1 >= 0 && s2 >= 0;
  // A chunked module also lists the weights' anchors and the chunk position (not
  // carried): the reference runs a call from a sequence's start, as the bench.
  int32_t carried = 0;
  for (int32_t s = 0; s < meta.num_states; ++s)
    carried += meta.states[s].role == MIRAS_STATE_CARRIED;
  if (w2 < 0 || carried != (momentum ? 4 : 2) || !hasShape(meta.states[w1], hidden, meta.dk) ||
      !hasShape(meta.states[w2], meta.dv, hidden) ||
      (momentum && (!hasShape(meta.states[s1], hidden, meta.dk) ||
                    !hasShape(meta.states[s2], meta.dv, hidden)))) {
    *whyNot = "module '" + name + "' does not carry the states of a two-layer MLP memory "
              "(W1 [hidden, dk], W2 [dv, hidden], and momentum S1, S2 alike)";
    return std::nullopt;
  }
  if (meta.steps != 1 || meta.chunk < 1 || !meta.read_after_write) {
    *whyNot = "the MLP references run one (k, v) pair per token, read after the write; "
              "module '" + name + "' differs";
    return std::nullopt;
  }
  std::string rule = meta.rule;
  while (!rule.empty() && (rule.back() == '\n' || rule.back() == ' '))
    rule.pop_back();
  for (const MlpPattern &pattern : kMlpPatterns) {
    if (pattern.momentum != momentum)
      continue;
    ReferenceModel model;
    model.kind = pattern.kind;
    model.name = pattern.name;
    model.chunk = meta.chunk;
    model.mlp = {hidden, pattern.activation, pattern.residual, pattern.layerNorm, 0.0f,
                 pattern.momentum, w1, w2, s1, s2};
    if (matchRule(meta, pattern.rule, rule, model) && model.etaGate >= 0)
      return model;
  }
  *whyNot = "no scalar reference for the update rule of module '" + name +
            "': the MLP references are Titans' and TTT-MLP's rules";
  return std::nullopt;
}

} // namespace

std::optional<ReferenceModel> findReference(const miras_module_metadata &meta,
                                            std::string *whyNot) {
  const std::string name = meta.name;
  if (stateIndex(meta, "W1") >= 0)
    return findMlpReference(meta, whyNot);
  // A chunked module also lists W's anchor and the chunk position (miras_abi.h
  // miras_state_role): the reference runs a call from a sequence's start, as the bench.
  int32_t carried = 0;
  for (int32_t s = 0; s < meta.num_states; ++s)
    carried += meta.states[s].role == MIRAS_STATE_CARRIED;
  if (meta.steps != 1 || carried != 1 || std::strcmp(meta.states[0].name, "W") != 0 ||
      meta.states[0].rank != 2 || meta.states[0].shape[0] != meta.dv ||
      meta.states[0].shape[1] != meta.dk) {
    *whyNot = "module '" + name + "' does not carry the single state W [dv, dk] of a linear "
              "memory with one (k, v) pair per token";
    return std::nullopt;
  }
  if (meta.chunk < 1) {
    *whyNot = "module '" + name + "' has chunk " + std::to_string(meta.chunk);
    return std::nullopt;
  }
  // The rule: the update line, then the read (o = W' q after the write, o = W q before).
  const std::string rule = meta.rule;
  const size_t newline = rule.find('\n');
  const std::string update = rule.substr(0, newline);
  std::string read = newline == std::string::npos ? "" : rule.substr(newline + 1);
  while (!read.empty() && (read.back() == '\n' || read.back() == ' '))
    read.pop_back();
  const char *expectedRead = meta.read_after_write ? "o = W' q" : "o = W q";
  if (read == expectedRead)
    for (const RulePattern &pattern : kPatterns) {
      ReferenceModel model;
      model.kind = pattern.kind;
      model.name = pattern.name;
      model.chunk = meta.chunk;
      model.readAfterWrite = meta.read_after_write != 0;
      if (!matchRule(meta, pattern.update, update, model))
        continue;
      model.constantLr = pattern.kind == ReferenceKind::TttLinear;
      return model;
    }
  *whyNot = "no scalar reference for the update rule of module '" + name + "' (" + update +
            "): references exist for the linear-memory rules of linear_attention, retnet, "
            "mamba2, gla, deltanet, gated_deltanet and ttt_linear";
  return std::nullopt;
}

namespace {

bool hasGradient(const ReferenceModel &model) {
  return model.kind == ReferenceKind::DeltaNet || model.kind == ReferenceKind::GatedDeltaNet ||
         model.kind == ReferenceKind::TttLinear;
}

// One token's view of the problem: its rows of q, k, v and its gates.
struct Token {
  int64_t index;          // (b * T + t) * H + h: the index of a scalar gate
  const float *q, *k, *v; // rows of dk, dk, dv
  float eta, alpha;       // the rule's scalar gates (0 when it has none)
  const float *alphaKeys; // GLA's key-axis decay [dk]
  float lr;               // the learning rate of the gradient rules: eta or a constant
};

Token tokenAt(const ReferenceModel &model, const Problem &p, int64_t b, int64_t t, int64_t h) {
  Token tok;
  tok.index = (b * p.length + t) * p.heads + h;
  tok.q = p.q + tok.index * p.dk;
  tok.k = p.k + tok.index * p.dk;
  tok.v = p.v + tok.index * p.dv;
  tok.eta = model.etaGate >= 0 ? p.gates[model.etaGate][tok.index] : 0.0f;
  tok.alpha = model.alphaGate >= 0 && model.kind != ReferenceKind::Gla
                  ? p.gates[model.alphaGate][tok.index]
                  : 0.0f;
  tok.alphaKeys = model.kind == ReferenceKind::Gla ? p.gates[model.alphaGate] + tok.index * p.dk
                                                   : nullptr;
  tok.lr = model.constantLr ? model.constant : tok.eta;
  return tok;
}

// The rank-1 term's left vector of the update W' = decay(W) + u k^T: v for the additive
// rules, -lr (c W_a k - v) for the gradient rules (c = alpha for Gated DeltaNet, else
// 1). prediction receives W_a k.
void updateVector(const ReferenceModel &model, const Problem &p, const Token &tok,
                  const float *Wa, float *prediction, float *u) {
  const int64_t dk = p.dk, dv = p.dv;
  if (!hasGradient(model)) {
    for (int64_t i = 0; i < dv; ++i)
      u[i] = tok.v[i];
    return;
  }
  const float c = model.kind == ReferenceKind::GatedDeltaNet ? tok.alpha : 1.0f;
  for (int64_t i = 0; i < dv; ++i) {
    float sum = 0.0f;
    for (int64_t j = 0; j < dk; ++j)
      sum += Wa[i * dk + j] * tok.k[j];
    prediction[i] = sum;
    u[i] = -tok.lr * (c * sum - tok.v[i]);
  }
}

// W_next = decay(W) + u k^T. W_next may be W (every element is read before written).
void advance(const ReferenceModel &model, const Problem &p, const Token &tok, const float *W,
             const float *u, float *Wnext) {
  const int64_t dk = p.dk, dv = p.dv;
  for (int64_t i = 0; i < dv; ++i)
    for (int64_t j = 0; j < dk; ++j) {
      float decayed = W[i * dk + j];
      switch (model.kind) {
      case ReferenceKind::RetNet:
        decayed *= model.constant;
        break;
      case ReferenceKind::Mamba2:
      case ReferenceKind::GatedDeltaNet:
        decayed *= tok.alpha;
        break;
      case ReferenceKind::Gla:
        decayed *= tok.alphaKeys[j];
        break;
      default:
        break;
      }
      Wnext[i * dk + j] = decayed + u[i] * tok.k[j];
    }
}

// out = W x (W [dv, dk]).
void matvec(const Problem &p, const float *W, const float *x, float *out) {
  for (int64_t i = 0; i < p.dv; ++i) {
    float sum = 0.0f;
    for (int64_t j = 0; j < p.dk; ++j)
      sum += W[i * p.dk + j] * x[j];
    out[i] = sum;
  }
}

// out = W^T y.
void vecmat(const Problem &p, const float *y, const float *W, float *out) {
  for (int64_t j = 0; j < p.dk; ++j)
    out[j] = 0.0f;
  for (int64_t i = 0; i < p.dv; ++i)
    for (int64_t j = 0; j < p.dk; ++j)
      out[j] += y[i] * W[i * p.dk + j];
}

// G += x y^T.
void addOuter(const Problem &p, const float *x, const float *y, float *G) {
  for (int64_t i = 0; i < p.dv; ++i)
    for (int64_t j = 0; j < p.dk; ++j)
      G[i * p.dk + j] += x[i] * y[j];
}

// The initial state W of one pair (Problem::initialStates[0]; NULL: zeros).
void loadInitialState(const Problem &p, int64_t pair, float *W) {
  const int64_t size = p.dv * p.dk;
  if (p.initialStates[0])
    std::memcpy(W, p.initialStates[0] + pair * size, sizeof(float) * size);
  else
    std::memset(W, 0, sizeof(float) * size);
}

} // namespace

void runReference(const ReferenceModel &model, const Problem &p, float *o,
                  const std::vector<float *> &finalStates, int64_t pairBegin, int64_t pairEnd) {
  if (model.mlp.hidden > 0)
    return runMlpReference(model, p, o, finalStates, pairBegin, pairEnd);
  const int64_t T = p.length, H = p.heads, dk = p.dk, dv = p.dv;
  std::vector<float> W(dv * dk), anchor(dv * dk), prediction(dv), u(dv);
  for (int64_t pair = pairBegin; pair < pairEnd; ++pair) {
    const int64_t b = pair / H, h = pair % H;
    loadInitialState(p, pair, W.data());
    for (int64_t t = 0; t < T; ++t) {
      const Token tok = tokenAt(model, p, b, t, h);
      float *out = o + tok.index * dv;
      if (!model.readAfterWrite) // o_t = W_{t-1} q_t
        matvec(p, W.data(), tok.q, out);
      // W_a: the state at the start of this token's chunk (the previous one when C = 1).
      const float *Wa = W.data();
      if (model.chunk > 1) {
        if (t % model.chunk == 0)
          anchor = W;
        Wa = anchor.data();
      }
      updateVector(model, p, tok, Wa, prediction.data(), u.data());
      advance(model, p, tok, W.data(), u.data(), W.data());
      if (model.readAfterWrite) // o_t = W_t q_t
        matvec(p, W.data(), tok.q, out);
    }
    if (finalStates[0])
      std::memcpy(finalStates[0] + pair * dv * dk, W.data(), sizeof(float) * dv * dk);
  }
}

void runReferenceBackward(const ReferenceModel &model, const Problem &p,
                          const ReferenceAdjoints &d, int64_t segment, int64_t pairBegin,
                          int64_t pairEnd) {
  if (model.mlp.hidden > 0)
    return runMlpReferenceBackward(model, p, d, segment, pairBegin, pairEnd);
  const int64_t T = p.length, H = p.heads, dk = p.dk, dv = p.dv, size = dv * dk;
  const int64_t C = model.chunk, S = segment, N = (T - 1) / S + 1;
  std::vector<float> checkpoints(N * size), states((S + 1) * size), G(size), anchorAdjoint(size);
  std::vector<float> prediction(dv), u(dv), du(dv), dPrediction(dv), dkExtra(dk);
  for (int64_t pair = pairBegin; pair < pairEnd; ++pair) {
    const int64_t b = pair / H, h = pair % H;
    // The state before every segment, from the initial one.
    float *W = states.data();
    loadInitialState(p, pair, W);
    float *anchor = states.data() + size; // scratch until the sweep
    for (int64_t t = 0; t < T; ++t) {
      if (t % S == 0)
        std::memcpy(checkpoints.data() + t / S * size, W, sizeof(float) * size);
      if (C > 1 && t % C == 0)
        std::memcpy(anchor, W, sizeof(float) * size);
      const Token tok = tokenAt(model, p, b, t, h);
      updateVector(model, p, tok, C > 1 ? anchor : W, prediction.data(), u.data());
      advance(model, p, tok, W, u.data(), W);
    }
    // The running adjoint of the state after token t, from the final state's.
    const float *finalAdjoint = d.finalStates.empty() ? nullptr : d.finalStates[0];
    if (finalAdjoint)
      std::memcpy(G.data(), finalAdjoint + pair * size, sizeof(float) * size);
    else
      std::fill(G.begin(), G.end(), 0.0f);
    std::fill(anchorAdjoint.begin(), anchorAdjoint.end(), 0.0f);
    for (int64_t c = N - 1; c >= 0; --c) {
      const int64_t start = c * S, count = std::min(S, T - start);
      // Slot j: the state before token start + j (slot count: after the segment).
      std::memcpy(states.data(), checkpoints.data() + c * size, sizeof(float) * size);
      for (int64_t j = 0; j < count; ++j) {
        const Token tok = tokenAt(model, p, b, start + j, h);
        const float *Wprev = states.data() + j * size;
        const float *Wa = C > 1 ? states.data() + (j - j % C) * size : Wprev;
        updateVector(model, p, tok, Wa, prediction.data(), u.data());
        advance(model, p, tok, Wprev, u.data(), states.data() + (j + 1) * size);
      }
      for (int64_t j = count - 1; j >= 0; --j) {
        const int64_t t = start + j;
        const Token tok = tokenAt(model, p, b, t, h);
        const float *Wprev = states.data() + j * size, *Wnext = Wprev + size;
        const float *Wa = C > 1 ? states.data() + (j - j % C) * size : Wprev;
        const float *dO = d.o + tok.index * dv;
        float *dq = d.dq + tok.index * dk, *dkOut = d.dk + tok.index * dk;
        float *dvOut = d.dv + tok.index * dv;
        // The read: o = W_t q (after the write) or W_{t-1} q.
        vecmat(p, dO, model.readAfterWrite ? Wnext : Wprev, dq);
        if (model.readAfterWrite)
          addOuter(p, dO, tok.q, G.data());
        // The rank-1 term u k^T.
        updateVector(model, p, tok, Wa, prediction.data(), u.data());
        matvec(p, G.data(), tok.k, du.data());
        vecmat(p, u.data(), G.data(), dkOut);
        float dAlpha = 0.0f;
        if (hasGradient(model)) {
          // u = -lr (c W_a k - v).
          const float scale = model.kind == ReferenceKind::GatedDeltaNet ? tok.alpha : 1.0f;
          float dLr = 0.0f;
          for (int64_t i = 0; i < dv; ++i) {
            dLr -= (scale * prediction[i] - tok.v[i]) * du[i];
            const float dResidual = -tok.lr * du[i];
            dvOut[i] = -dResidual;
            dPrediction[i] = scale * dResidual;
            dAlpha += prediction[i] * dResidual;
          }
          if (model.kind != ReferenceKind::GatedDeltaNet)
            dAlpha = 0.0f;
          if (model.etaGate >= 0 && !model.constantLr)
            d.gates[model.etaGate][tok.index] = dLr;
          vecmat(p, dPrediction.data(), Wa, dkExtra.data());
          for (int64_t j2 = 0; j2 < dk; ++j2)
            dkOut[j2] += dkExtra[j2];
        } else {
          for (int64_t i = 0; i < dv; ++i)
            dvOut[i] = du[i];
        }
        // The decay: G becomes the adjoint of W_{t-1}.
        float *dAlphaKeys = model.kind == ReferenceKind::Gla
                                ? d.gates[model.alphaGate] + tok.index * dk
                                : nullptr;
        if (dAlphaKeys)
          for (int64_t j2 = 0; j2 < dk; ++j2)
            dAlphaKeys[j2] = 0.0f;
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j2 = 0; j2 < dk; ++j2) {
            float &g = G[i * dk + j2];
            const float w = Wprev[i * dk + j2];
            switch (model.kind) {
            case ReferenceKind::RetNet:
              g *= model.constant;
              break;
            case ReferenceKind::Mamba2:
            case ReferenceKind::GatedDeltaNet:
              dAlpha += g * w;
              g *= tok.alpha;
              break;
            case ReferenceKind::Gla:
              dAlphaKeys[j2] += g * w;
              g *= tok.alphaKeys[j2];
              break;
            default:
              break;
            }
          }
        if (model.alphaGate >= 0 && model.kind != ReferenceKind::Gla)
          d.gates[model.alphaGate][tok.index] = dAlpha;
        // The gradient's read of W_a: the previous state, or the chunk's anchor.
        if (hasGradient(model))
          addOuter(p, dPrediction.data(), tok.k, C > 1 ? anchorAdjoint.data() : G.data());
        if (!model.readAfterWrite)
          addOuter(p, dO, tok.q, G.data());
        if (C > 1 && t % C == 0) { // the anchor is the state before this token
          for (int64_t e = 0; e < size; ++e)
            G[e] += anchorAdjoint[e];
          std::fill(anchorAdjoint.begin(), anchorAdjoint.end(), 0.0f);
        }
      }
    }
    std::memcpy(d.initialStates[0] + pair * size, G.data(), sizeof(float) * size);
  }
}

} // namespace miras::bench
