#include "relayllm/engine/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "relayllm/common/error.h"
#include "relayllm/engine/sampler_exp.h"

namespace relayllm {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

constexpr uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// A token with its score (a logit or an unnormalised probability).
struct Cand {
  float score;
  int32_t id;
};

// Strict order "a ranks before b": higher score, then lower id, so every selection is
// deterministic.
bool ranks_before(const Cand& a, const Cand& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

void check_id(int32_t id, size_t vocab, const char* what) {
  if (id < 0 || size_t(id) >= vocab)
    fail("sampler: {} id {} is outside the vocab of {}", what, id, vocab);
}

// vLLM's order: repetition over prompt+output (divide positive logits, multiply negative ones),
// then frequency (per occurrence) and presence (once) over output only. `mark` is a vocab-sized
// area whose entries we touch only at the ids involved, so no vocab-wide clear is needed.
void apply_penalties(const SampleInput& in, float* x, float* mark, size_t vocab) {
  const SamplingParams& p = *in.params;
  if (p.repetition_penalty != 1.0f) {
    for (int32_t id : in.prompt_ids) {
      check_id(id, vocab, "prompt token");
      mark[id] = 1.0f;
    }
    for (int32_t id : in.output_ids) {
      check_id(id, vocab, "output token");
      mark[id] = 1.0f;
    }
    const float r = p.repetition_penalty;
    auto penalise_once = [&](int32_t id) {
      if (mark[id] != 0.0f) {
        x[id] = x[id] > 0.0f ? x[id] / r : x[id] * r;
        mark[id] = 0.0f;
      }
    };
    for (int32_t id : in.prompt_ids) penalise_once(id);
    for (int32_t id : in.output_ids) penalise_once(id);
  }
  if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
    for (int32_t id : in.output_ids) {
      check_id(id, vocab, "output token");
      mark[id] = 0.0f;
    }
    for (int32_t id : in.output_ids) mark[id] += 1.0f;
    for (int32_t id : in.output_ids) {
      if (mark[id] != 0.0f) {
        x[id] -= p.frequency_penalty * mark[id] + p.presence_penalty;
        mark[id] = 0.0f;
      }
    }
  }
}

// Ids outside the vocab can never be produced, so masking them is a no-op rather than an error.
void mask_stop_tokens(const SampleInput& in, float* x, size_t vocab) {
  for (int32_t id : in.eos_token_ids) {
    if (id >= 0 && size_t(id) < vocab) x[id] = kNegInf;
  }
  for (int32_t id : in.params->stop_token_ids) {
    if (id >= 0 && size_t(id) < vocab) x[id] = kNegInf;
  }
}

bool restricted(const SampleInput& in) {
  return !in.token_bitmask.empty() || in.params->allowed_token_ids.has_value();
}

// What the request forbids or favours, before any penalty: vLLM's allowed_token_ids and
// bad_words, the grammar's mask, OpenAI's logit_bias.
void apply_restrictions(const SampleInput& in, float* x, size_t vocab) {
  const SamplingParams& p = *in.params;
  if (p.allowed_token_ids) {
    // Keep the allowed values aside, blank the row, put them back.
    std::vector<std::pair<int32_t, float>> keep;
    keep.reserve(p.allowed_token_ids->size());
    for (int32_t id : *p.allowed_token_ids) {
      check_id(id, vocab, "allowed token");
      keep.emplace_back(id, x[id]);
    }
    std::fill(x, x + vocab, kNegInf);
    for (const auto& [id, v] : keep) x[id] = v;
  }
  for (int32_t id : in.banned_ids)
    if (id >= 0 && size_t(id) < vocab) x[id] = kNegInf;
  if (!in.token_bitmask.empty()) {
    if (in.token_bitmask.size() * 32 < vocab)
      fail("sampler: token bitmask of {} words is short for the vocab of {}",
           in.token_bitmask.size(), vocab);
    // Grammar masks are mostly whole words: all ones inside free text, all zeros where the
    // grammar expects punctuation. Those take no per-bit work (a zero word is a plain fill,
    // which the compiler vectorises); only mixed words go bit by bit.
    for (size_t w = 0; w < in.token_bitmask.size(); ++w) {
      const uint32_t word = uint32_t(in.token_bitmask[w]);
      if (word == 0xffffffffu) continue;
      const size_t begin = w * 32;
      if (begin >= vocab) break;
      const size_t end = std::min(vocab, begin + 32);
      if (word == 0) {
        std::fill(x + begin, x + end, kNegInf);
        continue;
      }
      for (size_t id = begin; id < end; ++id)
        if (!((word >> (id - begin)) & 1u)) x[id] = kNegInf;
    }
  }
  for (const auto& [id, bias] : p.logit_bias) {
    check_id(id, vocab, "logit_bias token");
    x[id] += bias;
  }
}

// The k best logits (k < n), best first, via a bounded heap whose front is the worst kept entry.
std::vector<Cand> top_k_logits(const float* x, size_t n, size_t k) {
  std::vector<Cand> heap;
  heap.reserve(k);
  for (size_t i = 0; i < n; ++i) {
    if (x[i] == kNegInf) continue;
    if (heap.size() < k) {
      heap.push_back({x[i], int32_t(i)});
      std::push_heap(heap.begin(), heap.end(), ranks_before);
    } else if (x[i] > heap.front().score) {  // equal scores lose: their id is higher
      std::pop_heap(heap.begin(), heap.end(), ranks_before);
      heap.back() = {x[i], int32_t(i)};
      std::push_heap(heap.begin(), heap.end(), ranks_before);
    }
  }
  std::sort_heap(heap.begin(), heap.end(), ranks_before);
  return heap;
}

// 4-lane vectors through the GCC/Clang vector extension: the default -ftrapping-math keeps the
// compiler from vectorising loops with float compares on its own, and these loops are the
// vocab-wide passes that dominate sampling.
using F4 = float __attribute__((vector_size(16)));
using I4 = int32_t __attribute__((vector_size(16)));

inline F4 load4(const float* p) {
  F4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(float* p, F4 v) { std::memcpy(p, &v, sizeof v); }
inline F4 select4(I4 mask, F4 a, F4 b) {
  return std::bit_cast<F4>((mask & std::bit_cast<I4>(a)) | (~mask & std::bit_cast<I4>(b)));
}
inline F4 splat4(float v) { return F4{v, v, v, v}; }

float max_of(const float* x, size_t n) {
  F4 acc = splat4(kNegInf);
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const F4 v = load4(x + i);
    acc = select4(v > acc, v, acc);
  }
  float m = kNegInf;
  for (int j = 0; j < 4; ++j) m = acc[j] > m ? acc[j] : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// Copies the row and reports whether it holds a NaN, in one pass.
bool copy_has_nan(const float* x, float* out, size_t n) {
  I4 bad = I4{0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const F4 v = load4(x + i);
    bad |= v != v;
    store4(out + i, v);
  }
  bool nan = bad[0] | bad[1] | bad[2] | bad[3];
  for (; i < n; ++i) {
    out[i] = x[i];
    nan |= x[i] != x[i];
  }
  return nan;
}

// argmax and the NaN check in one read of the row, without copying it: the greedy path of an
// unrestricted request. A vocab of 128k is half a megabyte per row, and a batch of 256 rows was
// read three times (copy, max, search) on one thread each step. Lanes keep their first maximum
// (strict >), and lanes are merged by value then index, so the lowest id wins ties. Returns -1
// when the row holds a NaN.
int64_t argmax_unless_nan(const float* x, size_t n) {
  // Four independent sets of lanes: one set's compare-and-select chain would bound the loop by
  // its latency, not by the loads.
  constexpr int kSets = 4;
  F4 best[kSets];
  I4 best_at[kSets], at[kSets];
  for (int s = 0; s < kSets; ++s) {
    best[s] = splat4(kNegInf);
    at[s] = best_at[s] = I4{0, 1, 2, 3} + 4 * s;
  }
  I4 bad = I4{0, 0, 0, 0};
  size_t i = 0;
  if (n <= size_t(std::numeric_limits<int32_t>::max()) - 4 * kSets)
    for (; i + 4 * kSets <= n; i += 4 * kSets)
      for (int s = 0; s < kSets; ++s) {
        const F4 v = load4(x + i + 4 * size_t(s));
        bad |= v != v;
        const I4 better = v > best[s];
        best[s] = select4(better, v, best[s]);
        best_at[s] = (better & at[s]) | (~better & best_at[s]);
        at[s] += 4 * kSets;
      }
  if (bad[0] | bad[1] | bad[2] | bad[3]) return -1;
  float m = kNegInf;
  int64_t m_at = -1;
  for (int s = 0; s < kSets; ++s)
    for (int j = 0; j < 4; ++j)
      if (best[s][j] > m || (best[s][j] == m && best[s][j] != kNegInf && best_at[s][j] < m_at)) {
        m = best[s][j];
        m_at = best_at[s][j];
      }
  for (; i < n; ++i) {
    if (x[i] != x[i]) return -1;
    if (x[i] > m) {
      m = x[i];
      m_at = int64_t(i);
    }
  }
  if (m == kNegInf) fail("sampler: every token is masked (all {} logits are -inf)", n);
  return m_at;
}

// Weights are summed in blocks: float lanes inside a block (short sums, little rounding), double
// across blocks. The block sums also let the draw skip whole blocks.
constexpr size_t kBlock = 1024;

double block_sums(const float* w, size_t n, std::vector<double>& blocks) {
  blocks.clear();
  double total = 0.0;
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t e = std::min(n, b + kBlock);
    float lane[8] = {};
    size_t i = b;
    for (; i + 8 <= e; i += 8) {
      for (size_t j = 0; j < 8; ++j) lane[j] += w[i + j];
    }
    double s = 0.0;
    for (; i < e; ++i) s += w[i];
    for (float v : lane) s += v;
    blocks.push_back(s);
    total += s;
  }
  return total;
}

// Inverse-CDF draw over nonnegative weights in [begin, end); a zero weight is never chosen and
// the last positive weight absorbs rounding. Returns `end` when no weight is positive.
template <typename WeightAt>
size_t draw_range(size_t begin, size_t end, double& cum, double target, WeightAt weight_at) {
  size_t last_positive = end;
  for (size_t i = begin; i < end; ++i) {
    const float w = weight_at(i);
    if (w <= 0.0f) continue;
    cum += w;
    last_positive = i;
    if (cum > target) return i;
  }
  return last_positive;
}

size_t draw_blocked(const float* w, size_t n, const std::vector<double>& blocks, double total,
                    double u) {
  const double target = u * total;
  double cum = 0.0;
  size_t last_positive = n;
  for (size_t b = 0; b < blocks.size(); ++b) {
    if (blocks[b] <= 0.0) continue;
    const size_t begin = b * kBlock;
    const size_t end = std::min(n, begin + kBlock);
    if (cum + blocks[b] > target) {
      double in_block = cum;
      const size_t i = draw_range(begin, end, in_block, target, [w](size_t k) { return w[k]; });
      if (i != end) return i;
    }
    cum += blocks[b];
    for (size_t i = end; i > begin; --i) {
      if (w[i - 1] > 0.0f) {
        last_positive = i - 1;
        break;
      }
    }
  }
  if (last_positive == n) fail("sampler: every token is masked");
  return last_positive;
}

size_t draw_cands(const Cand* c, size_t n, double u) {
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) total += c[i].score;
  double cum = 0.0;
  const size_t i = draw_range(0, n, cum, u * total, [c](size_t k) { return c[k].score; });
  if (i == n) fail("sampler: every token is masked");
  return i;
}

// Rearranges `c` so that its first entries are the nucleus: the smallest set of best-ranked
// candidates whose mass reaches `target`. Quickselect on mass, O(n) expected, so a flat 150k
// distribution is never sorted. Pivots come from a fixed hash sequence to stay deterministic.
size_t select_nucleus(std::vector<Cand>& c, double target) {
  size_t lo = 0;         // c[0, lo) is in the nucleus
  size_t hi = c.size();  // c[hi, end) is out
  double need = target;  // mass still missing after c[0, lo)
  uint64_t pivot_seed = 0x5EED;
  while (lo < hi) {
    const size_t pick = lo + size_t(splitmix64(pivot_seed) % (hi - lo));
    std::swap(c[pick], c[hi - 1]);
    const Cand pivot = c[hi - 1];
    auto mid = std::partition(c.begin() + lo, c.begin() + (hi - 1),
                              [&](const Cand& x) { return ranks_before(x, pivot); });
    const size_t a_end = size_t(mid - c.begin());
    double above = 0.0;
    for (size_t i = lo; i < a_end; ++i) above += c[i].score;
    if (above >= need) {
      hi = a_end;  // the pivot and everything after it are not needed
      continue;
    }
    std::swap(c[a_end], c[hi - 1]);  // pivot right after the better ones
    if (above + pivot.score >= need) return a_end + 1;
    need -= above + pivot.score;
    lo = a_end + 1;
  }
  // Rounding left the target unreached (or it was reached exactly at lo): keep what was taken.
  return std::max<size_t>(lo, 1);
}

// Mass and number of the weights >= tau.
std::pair<double, size_t> mass_at_or_above(const float* w, size_t n, float tau) {
  double mass = 0.0;
  size_t count = 0;
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t e = std::min(n, b + kBlock);
    F4 lane_mass = splat4(0.0f);
    I4 lane_count = I4{0, 0, 0, 0};
    size_t i = b;
    for (; i + 4 <= e; i += 4) {
      const F4 v = load4(w + i);
      const I4 in = v >= splat4(tau);
      lane_mass += select4(in, v, splat4(0.0f));
      lane_count -= in;  // a true lane is -1
    }
    double s = 0.0;
    for (; i < e; ++i) {
      if (w[i] >= tau) {
        s += w[i];
        ++count;
      }
    }
    for (int j = 0; j < 4; ++j) {
      s += lane_mass[j];
      count += size_t(lane_count[j]);
    }
    mass += s;
  }
  return {mass, count};
}

// A weight threshold whose survivors already hold `target` mass, so they contain the nucleus
// (it is a prefix of the ranking) and only they need to become candidates. Real LM rows are
// peaked and a high threshold usually suffices; the last resort is always enough, since the
// weights below it sum to less than (1 - top_p) * total. Returns the threshold and its count.
std::pair<float, size_t> nucleus_threshold(const float* w, size_t n, double total, double target,
                                           float top_p) {
  const float safe =
      std::max(float((1.0 - double(top_p)) * total / double(n)), std::numeric_limits<float>::min());
  for (float tau : {0x1p-3f, 0x1p-7f, 0x1p-12f, 0x1p-18f}) {
    if (tau <= safe) break;
    const auto [mass, count] = mass_at_or_above(w, n, tau);
    if (mass >= target) return {tau, count};
  }
  return {safe, mass_at_or_above(w, n, safe).second};
}

// Candidates best first (scores = unnormalised probabilities): top_p against `total`, the mass
// they were normalised over, then min_p, then the draw.
int32_t sample_sorted(std::vector<Cand>& cand, double total, float top_p, float min_p,
                      RequestRng& rng) {
  if (cand.empty()) fail("sampler: every token is masked");
  size_t keep = cand.size();
  if (top_p < 1.0f) {
    const double target = double(top_p) * total;
    double cum = 0.0;
    for (size_t i = 0; i < cand.size(); ++i) {
      cum += cand[i].score;
      if (cum >= target) {
        keep = i + 1;
        break;
      }
    }
  }
  if (min_p > 0.0f) {
    const float thr = min_p * cand[0].score;
    size_t i = 1;
    while (i < keep && cand[i].score >= thr) ++i;
    keep = i;
  }
  return cand[draw_cands(cand.data(), keep, rng.uniform())].id;
}

int32_t sample_filtered(float* x, size_t n, const SamplingParams& p, RequestRng& rng) {
  const float inv_t = 1.0f / p.temperature;
  const bool use_k = p.top_k_enabled() && size_t(p.top_k) < n;
  const bool use_p = p.top_p < 1.0f;

  if (use_k) {
    std::vector<Cand> cand = top_k_logits(x, n, size_t(p.top_k));
    if (cand.empty()) fail("sampler: every token is masked (all {} logits are -inf)", n);
    const float m = cand[0].score;
    double total = 0.0;
    for (Cand& c : cand) {
      c.score = sampler_exp::exp_nonpositive((c.score - m) * inv_t);
      total += c.score;
    }
    return sample_sorted(cand, total, p.top_p, p.min_p, rng);
  }

  const float m = max_of(x, n);
  if (m == kNegInf) fail("sampler: every token is masked (all {} logits are -inf)", n);
  // After max subtraction the best token's weight is exactly 1, so min_p is an absolute cut.
  // With top_p it waits: the nucleus is measured against the mass before min_p (vLLM's order).
  const float dense_min_w = use_p ? 0.0f : p.min_p;
  sampler_exp::exp_row()(x, x, n, m, inv_t, dense_min_w);
  std::vector<double> blocks;
  const double total = block_sums(x, n, blocks);
  if (!use_p) return int32_t(draw_blocked(x, n, blocks, total, rng.uniform()));

  const double target = double(p.top_p) * total;
  const auto [tau, count] = nucleus_threshold(x, n, total, target, p.top_p);
  // Branch-free compaction (in flat rows the test is a coin flip for the branch predictor); the
  // slot past the last survivor takes the rejected writes, and the clamp keeps them in bounds.
  std::vector<Cand> cand(count + 1);
  size_t kept = 0;
  for (size_t i = 0; i < n; ++i) {
    cand[kept] = {x[i], int32_t(i)};
    kept = std::min(kept + (x[i] >= tau ? 1 : 0), count);
  }
  cand.resize(kept);
  if (cand.empty()) fail("sampler: every token is masked");
  size_t keep = select_nucleus(cand, target);
  if (p.min_p > 0.0f) {
    // min_p and top_p both cut a tail of the same ranking, so applying it inside the nucleus
    // gives vLLM's result; the best token (weight 1) always stays.
    const float min_w = p.min_p;
    keep = size_t(std::partition(cand.begin(), cand.begin() + keep,
                                 [min_w](const Cand& e) { return e.score >= min_w; }) -
                  cand.begin());
  }
  return cand[draw_cands(cand.data(), keep, rng.uniform())].id;
}

}  // namespace

RequestRng::RequestRng(uint64_t seed) {
  uint64_t x = seed;
  for (uint64_t& s : s_) s = splitmix64(x);
}

uint64_t RequestRng::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double RequestRng::uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }

SampleOutput sample_token(const SampleInput& in, RequestRng& rng, std::vector<float>& scratch) {
  if (in.params == nullptr) fail("sampler: SampleInput.params is null");
  const SamplingParams& p = *in.params;
  const size_t n = in.logits.size();
  if (n == 0) fail("sampler: empty logits row");
  if (n > size_t(std::numeric_limits<int32_t>::max())) fail("sampler: vocab of {} is too large", n);

  const bool penalties =
      p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
  const bool stops_masked = in.output_ids.size() < size_t(std::max(p.min_tokens, 0));
  if (p.greedy() && !penalties && !stops_masked && !restricted(in) && in.banned_ids.empty() &&
      p.logit_bias.empty()) {
    // Nothing changes the row: its first maximum, read in place.
    const int64_t token = argmax_unless_nan(in.logits.data(), n);
    if (token >= 0) {
      SampleOutput out;
      out.token = int32_t(token);
      if (p.logprobs) {
        scratch.resize(n);
        std::span<float> row(scratch.data(), n);
        log_softmax(in.logits, row);
        out.logprobs = top_logprobs(row, out.token, *p.logprobs);
      }
      return out;
    }
    // A NaN: the general path below names its token.
  }
  scratch.resize(penalties ? 2 * n : n);
  float* x = scratch.data();
  if (copy_has_nan(in.logits.data(), x, n)) {
    auto it =
        std::find_if(in.logits.begin(), in.logits.end(), [](float v) { return std::isnan(v); });
    fail("sampler: logit of token {} is NaN", it - in.logits.begin());
  }

  apply_restrictions(in, x, n);
  if (penalties) apply_penalties(in, x, x + n, n);
  if (stops_masked) {
    if (restricted(in)) {
      // Keep the stop tokens' values to restore when masking them would leave no token.
      std::vector<std::pair<int32_t, float>> saved;
      for (auto ids :
           {std::span<const int32_t>(in.eos_token_ids), std::span<const int32_t>(p.stop_token_ids)})
        for (int32_t id : ids)
          if (id >= 0 && size_t(id) < n) saved.emplace_back(id, x[id]);
      mask_stop_tokens(in, x, n);
      if (max_of(x, n) == kNegInf)
        for (const auto& [id, v] : saved) x[id] = v;
    } else {
      mask_stop_tokens(in, x, n);
    }
  }

  SampleOutput out;
  // The working row holds no NaN (checked when copied), so the first maximum always exists.
  out.token = p.greedy() ? int32_t(argmax_unless_nan(x, n)) : sample_filtered(x, n, p, rng);

  if (p.logprobs) {
    // The working row is no longer needed, so it holds the raw log-softmax.
    std::span<float> row(x, n);
    log_softmax(in.logits, row);
    out.logprobs = top_logprobs(row, out.token, *p.logprobs);
  }
  return out;
}

void log_softmax(std::span<const float> logits, std::span<float> out) {
  const size_t n = logits.size();
  if (out.size() != n) fail("log_softmax: output has {} entries, logits have {}", out.size(), n);
  if (n == 0) fail("log_softmax: empty logits row");
  if (copy_has_nan(logits.data(), out.data(), n)) fail("log_softmax: logits contain NaN");
  const float m = max_of(out.data(), n);
  if (m == kNegInf) fail("log_softmax: all {} logits are -inf", n);
  // The exps go through `out` so that the sum can use the blocked (float lanes, double blocks)
  // summation: 150k terms summed in one float would lose digits the logprobs are reported with.
  sampler_exp::exp_row()(out.data(), out.data(), n, m, 1.0f, 0.0f);
  std::vector<double> blocks;
  const float log_sum = float(std::log(block_sums(out.data(), n, blocks)));
  for (size_t i = 0; i < n; ++i) out[i] = (logits[i] - m) - log_sum;
}

TokenLogprobs top_logprobs(std::span<const float> logprob_row, int32_t token, int32_t k) {
  const size_t n = logprob_row.size();
  if (k < 0 || k > kMaxLogprobs)
    fail("top_logprobs: k must be in [0, {}], got {}", kMaxLogprobs, k);
  check_id(token, n, "logprob token");
  TokenLogprobs r;
  r.token = token;
  r.logprob = logprob_row[size_t(token)];
  auto& best = r.top;  // kept sorted best first; ids arrive ascending, so ties keep the lower id
  best.reserve(size_t(k));
  const size_t cap = size_t(k);
  if (cap == 0) return r;
  for (size_t i = 0; i < n; ++i) {
    const float v = logprob_row[i];
    if (std::isnan(v)) continue;
    if (best.size() == cap && !(v > best.back().second)) continue;
    const auto at = std::upper_bound(best.begin(), best.end(), v,
                                     [](float val, const auto& e) { return val > e.second; }) -
                    best.begin();
    if (best.size() == cap) best.pop_back();
    best.insert(best.begin() + at, {int32_t(i), v});
  }
  return r;
}

}  // namespace relayllm
