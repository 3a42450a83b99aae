#include "relayllm/model/model_limits.h"

#include <unistd.h>

#include <cmath>
#include <iterator>

#include "relayllm/common/error.h"

namespace relayllm {
namespace {

void check_size(const std::string& source, const std::string& field, int64_t value, int64_t max) {
  if (value <= 0 || value > max)
    fail("{}: field {} = {} is out of range (1 to {})", source, field, value, max);
}

void check_real(const std::string& source, const std::string& field, double value, double low,
                double high, const char* range) {
  if (!std::isfinite(value) || !(value > low) || !(value <= high))
    fail("{}: field {} = {} is out of range (must be finite and {})", source, field, value, range);
}

// a * b, or nullopt on overflow; nullopt propagates.
std::optional<uint64_t> mul(std::optional<uint64_t> a, std::optional<uint64_t> b) {
  uint64_t out;
  if (!a || !b || __builtin_mul_overflow(*a, *b, &out)) return std::nullopt;
  return out;
}
std::optional<uint64_t> add(std::optional<uint64_t> a, std::optional<uint64_t> b) {
  uint64_t out;
  if (!a || !b || __builtin_add_overflow(*a, *b, &out)) return std::nullopt;
  return out;
}

uint64_t physical_memory_bytes() {
  long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return UINT64_MAX;  // unknown: let the allocator decide
  return uint64_t(pages) * uint64_t(page);
}

std::string human_bytes(uint64_t bytes) {
  static const char* const kUnits[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = double(bytes);
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) value /= 1024, ++unit;
  return unit == 0 ? fmt::format("{} bytes", bytes) : fmt::format("{:.1f} {}", value, kUnits[unit]);
}

}  // namespace

void validate_model_config(const ModelConfig& c, const std::string& source,
                           const ConfigFieldNames& names) {
  check_size(source, names.vocab_size, c.vocab_size, kMaxVocab);
  check_size(source, names.hidden_size, c.hidden_size, kMaxHidden);
  check_size(source, names.intermediate_size, c.intermediate_size, kMaxHidden);
  check_size(source, names.num_layers, c.num_layers, kMaxLayers);
  check_size(source, names.num_heads, c.num_heads, kMaxHeads);
  check_size(source, names.num_kv_heads, c.num_kv_heads, kMaxHeads);
  check_size(source, names.head_dim, c.head_dim, kMaxHidden);
  check_size(source, names.max_position_embeddings, c.max_position_embeddings, kMaxPositions);
  if (c.sliding_window) check_size(source, names.sliding_window, *c.sliding_window, kMaxPositions);
  check_real(source, names.rms_norm_eps, c.rms_norm_eps, 0, 1, "in (0, 1]");
  check_real(source, names.rope_theta, c.rope.theta, 1, 1e15, "in (1, 1e15]");
  if (c.rope.type != RopeType::kDefault)
    check_real(source, names.rope_factor, c.rope.factor, 0, 1e6, "in (0, 1e6]");
  if (c.rope.type == RopeType::kLlama3) {
    check_real(source, "low_freq_factor", c.rope.low_freq_factor, 0, 1e6, "in (0, 1e6]");
    check_real(source, "high_freq_factor", c.rope.high_freq_factor, 0, 1e6, "in (0, 1e6]");
    check_size(source, "original_max_position_embeddings", c.rope.original_max_position_embeddings,
               kMaxPositions);
  }
}

std::optional<uint64_t> model_host_bytes(const ModelConfig& c, int64_t max_positions) {
  using U = std::optional<uint64_t>;
  const U hidden = uint64_t(c.hidden_size), inter = uint64_t(c.intermediate_size);
  const U q_out = mul(uint64_t(c.num_heads), uint64_t(c.head_dim));
  const U kv_out = mul(uint64_t(c.num_kv_heads), uint64_t(c.head_dim));
  // Per layer: q and o projections, k and v, the MLP's three matrices, two norms, the q/k/v
  // biases and the q/k norms (counted whether or not the architecture has them: an upper bound).
  U layer = mul(mul(q_out, 2), hidden);
  layer = add(layer, mul(mul(kv_out, 2), hidden));
  layer = add(layer, mul(mul(inter, 3), hidden));
  layer = add(layer, add(mul(hidden, 2), add(q_out, mul(kv_out, 2))));
  layer = add(layer, mul(uint64_t(c.head_dim), 2));
  U elements = mul(layer, uint64_t(c.num_layers));
  const U embedding = mul(uint64_t(c.vocab_size), hidden);
  elements = add(elements, mul(embedding, c.tie_word_embeddings ? 1 : 2));
  elements = add(elements, hidden);
  const U rope = mul(uint64_t(max_positions), uint64_t(c.head_dim));
  return mul(add(elements, rope), sizeof(float));
}

void check_model_fits(const ModelConfig& c, const std::string& source, uint64_t available) {
  if (available == 0) available = physical_memory_bytes();
  std::optional<uint64_t> bytes = model_host_bytes(c, c.max_position_embeddings);
  if (!bytes)
    fail(
        "{}: the model's sizes multiply beyond 2^64 bytes ({} layers, hidden {}, vocab {}, "
        "intermediate {})",
        source, c.num_layers, c.hidden_size, c.vocab_size, c.intermediate_size);
  if (*bytes > available)
    fail(
        "{}: the model needs {} of memory for its fp32 weights and rope table ({} layers, "
        "hidden {}, intermediate {}, vocab {}), more than the {} this machine has",
        source, human_bytes(*bytes), c.num_layers, c.hidden_size, c.intermediate_size, c.vocab_size,
        human_bytes(available));
}

std::optional<int64_t> tensor_layer_index(const std::string& name, const std::string& prefix) {
  if (name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  int64_t index = 0;
  size_t i = prefix.size();
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9'; ++i) {
    if (index > (INT64_MAX - 9) / 10) return INT64_MAX;  // absurdly many digits: "huge"
    index = index * 10 + (name[i] - '0');
  }
  if (i == prefix.size() || i >= name.size() || name[i] != '.') return std::nullopt;
  return index;
}

void check_layer_tensors(const std::vector<std::string>& tensor_names, const std::string& prefix,
                         int64_t num_layers, const std::string& source,
                         const std::string& layer_field) {
  for (const std::string& name : tensor_names) {
    std::optional<int64_t> layer = tensor_layer_index(name, prefix);
    if (layer && *layer >= num_layers)
      fail(
          "{}: tensor {} belongs to layer {}, but {} = {} (the layer count is smaller than the "
          "tensors present)",
          source, name, *layer, layer_field, num_layers);
  }
}

}  // namespace relayllm
