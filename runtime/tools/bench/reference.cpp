// reference.cpp: scalar reference implementations of the linear-memory models of SPEC
// section 6 (linear attention, RetNet, Mamba2, GLA, DeltaNet, Gated DeltaNet, TTT-Linear),
// and the recognition of a module as one of them by its derived update rule.
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

#include <cctype>
#include <cstdio>
#include <cstdlib>
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
// decay, alphaGate), {lr} a scalar gate (etaGate), {const} a number (the rule prints
// constants with %g; a param printing the same supplies the exact value), {Wa} the state
// the gradient reads: W, or W_anchor with chunks (SPEC section 7).

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
    if (hole == "Wa") {
      if (rule.compare(r, 8, "W_anchor") == 0 && (r + 8 == rule.size() || !isIdentChar(rule[r + 8])))
        r += 8;
      else if (rule.compare(r, 1, "W") == 0 && (r + 1 == rule.size() || !isIdentChar(rule[r + 1])))
        r += 1;
      else
        return false;
      continue;
    }
    if (hole == "const") {
      size_t end = r;
      while (end < rule.size() && (std::isdigit(static_cast<unsigned char>(rule[end])) ||
                                   rule[end] == '.' || rule[end] == 'e' ||
                                   ((rule[end] == '-' || rule[end] == '+') && end > r &&
                                    rule[end - 1] == 'e')))
        ++end;
      if (end == r)
        return false;
      model.constant = static_cast<float>(exactConstant(meta, rule.substr(r, end - r)));
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
    int *slot = hole == "lr" ? &model.etaGate : &model.alphaGate;
    const bool kindOk = hole == "decay_keys" ? keys : gate.kind == MIRAS_GATE_SCALAR;
    if (!kindOk || (*slot >= 0 && *slot != index))
      return false;
    *slot = index;
    r = end;
  }
  return r == rule.size();
}

} // namespace

std::optional<ReferenceModel> findReference(const miras_module_metadata &meta,
                                            std::string *whyNot) {
  const std::string name = meta.name;
  if (meta.steps != 1 || meta.num_states != 1 || std::strcmp(meta.states[0].name, "W") != 0 ||
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

void runReference(const ReferenceModel &model, const Problem &p, float *o, float *finalState,
                  int64_t pairBegin, int64_t pairEnd) {
  const int64_t T = p.length, H = p.heads, dk = p.dk, dv = p.dv;
  const bool hasGradient = model.kind == ReferenceKind::DeltaNet ||
                           model.kind == ReferenceKind::GatedDeltaNet ||
                           model.kind == ReferenceKind::TttLinear;
  std::vector<float> anchor(dv * dk), residual(dv);
  for (int64_t pair = pairBegin; pair < pairEnd; ++pair) {
    const int64_t b = pair / H, h = pair % H;
    float *W = finalState + pair * dv * dk;
    std::memcpy(W, p.initialState + pair * dv * dk, sizeof(float) * dv * dk);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t token = (b * T + t) * H + h; // index of a scalar gate
      const float *k = p.k + token * dk;
      const float *q = p.q + token * dk;
      const float *v = p.v + token * dv;
      float *out = o + token * dv;
      const float eta = model.etaGate >= 0 ? p.gates[model.etaGate][token] : 0.0f;
      const float alpha = model.alphaGate >= 0 ? p.gates[model.alphaGate][token] : 0.0f;

      if (!model.readAfterWrite) // o_t = W_{t-1} q_t
        for (int64_t i = 0; i < dv; ++i) {
          float sum = 0.0f;
          for (int64_t j = 0; j < dk; ++j)
            sum += W[i * dk + j] * q[j];
          out[i] = sum;
        }

      if (hasGradient) {
        // W_a: the state at the start of this token's chunk (the previous one when C = 1).
        const float *Wa = W;
        if (model.chunk > 1) {
          if (t % model.chunk == 0)
            std::memcpy(anchor.data(), W, sizeof(float) * dv * dk);
          Wa = anchor.data();
        }
        // residual = (alpha_t for Gated DeltaNet) W_a k_t - v_t
        for (int64_t i = 0; i < dv; ++i) {
          float prediction = 0.0f;
          for (int64_t j = 0; j < dk; ++j)
            prediction += Wa[i * dk + j] * k[j];
          if (model.kind == ReferenceKind::GatedDeltaNet)
            prediction = alpha * prediction;
          residual[i] = prediction - v[i];
        }
      }

      switch (model.kind) {
      case ReferenceKind::LinearAttention:
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j = 0; j < dk; ++j)
            W[i * dk + j] = W[i * dk + j] + v[i] * k[j];
        break;
      case ReferenceKind::RetNet:
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j = 0; j < dk; ++j)
            W[i * dk + j] = model.constant * W[i * dk + j] + v[i] * k[j];
        break;
      case ReferenceKind::Mamba2:
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j = 0; j < dk; ++j)
            W[i * dk + j] = alpha * W[i * dk + j] + v[i] * k[j];
        break;
      case ReferenceKind::Gla: {
        const float *alphaKeys = p.gates[model.alphaGate] + token * dk;
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j = 0; j < dk; ++j)
            W[i * dk + j] = W[i * dk + j] * alphaKeys[j] + v[i] * k[j];
        break;
      }
      case ReferenceKind::DeltaNet:
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j = 0; j < dk; ++j)
            W[i * dk + j] = W[i * dk + j] - eta * residual[i] * k[j];
        break;
      case ReferenceKind::GatedDeltaNet:
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j = 0; j < dk; ++j)
            W[i * dk + j] = alpha * W[i * dk + j] - eta * residual[i] * k[j];
        break;
      case ReferenceKind::TttLinear: {
        const float lr = model.constantLr ? model.constant : eta;
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j = 0; j < dk; ++j)
            W[i * dk + j] = W[i * dk + j] - lr * residual[i] * k[j];
        break;
      }
      }

      if (model.readAfterWrite) // o_t = W_t q_t
        for (int64_t i = 0; i < dv; ++i) {
          float sum = 0.0f;
          for (int64_t j = 0; j < dk; ++j)
            sum += W[i * dk + j] * q[j];
          out[i] = sum;
        }
    }
  }
}

} // namespace miras::bench
