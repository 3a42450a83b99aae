#include "relayllm/model/weight_quantization.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "relayllm/backend/fp8_weight.h"
#include "relayllm/common/error.h"
#include "relayllm/common/half.h"
#include "relayllm/common/thread_pool.h"

namespace relayllm {
namespace {

constexpr size_t kQ8Block = 32, kQ8BlockBytes = 34;

// A 16-bit float tensor's values in fp32 (exact: both formats are subsets of fp32).
std::vector<float> half_values(const HostTensor& t) {
  std::vector<float> v(t.blocks.size() / 2);
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, t.blocks.data() + 2 * i, 2);
    v[i] = t.format == WeightFormat::kBF16 ? bf16_to_float(h) : fp16_to_float(h);
  }
  return v;
}

}  // namespace

LoadQuantization parse_load_quantization(const std::string& name) {
  if (name.empty() || name == "none" || name == "None" || name == "gguf")
    return LoadQuantization::kNone;
  if (name == "q8_0") return LoadQuantization::kQ8_0;
  if (name == "fp8") return LoadQuantization::kFP8;
  // compressed-tensors FP8 checkpoints are read as they are, whatever this flag says.
  if (name == "compressed-tensors") return LoadQuantization::kNone;
  fail(
      "--quantization {}: not supported; relayllm reads safetensors in their own dtype (and "
      "FP8 compressed-tensors checkpoints) and GGUF files in their block formats, and "
      "quantizes at load only to 'q8_0' or 'fp8' (else 'none' or 'gguf')",
      name);
}

WeightFormat quantized_format(LoadQuantization q) {
  switch (q) {
    case LoadQuantization::kQ8_0:
      return WeightFormat::kQ8_0;
    case LoadQuantization::kFP8:
      return WeightFormat::kFP8;
    case LoadQuantization::kNone:
      break;
  }
  return WeightFormat::kNone;
}

std::vector<std::byte> quantize_q8_0(std::span<const float> values) {
  RELAYLLM_CHECK(values.size() % kQ8Block == 0, "q8_0: {} values are not whole blocks of 32",
                 values.size());
  std::vector<std::byte> out(values.size() / kQ8Block * kQ8BlockBytes);
  for (size_t b = 0; b < values.size() / kQ8Block; ++b) {
    const float* x = values.data() + b * kQ8Block;
    float amax = 0;
    for (size_t i = 0; i < kQ8Block; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f, inv = d != 0 ? 1.0f / d : 0.0f;
    std::byte* o = out.data() + b * kQ8BlockBytes;
    const uint16_t dh = float_to_fp16(d);
    std::memcpy(o, &dh, 2);
    for (size_t i = 0; i < kQ8Block; ++i)
      o[2 + i] = std::byte(uint8_t(int8_t(std::round(x[i] * inv))));
  }
  return out;
}

namespace {

size_t quantize_fp8(ModelWeights& weights, const ModelConfig& config) {
  std::vector<HostTensor*> todo;
  for (const WeightSlot& slot : weight_slots(weights, config)) {
    HostTensor& t = *slot.tensor;
    // vLLM's fp8 leaves lm_head and the embedding in the model's dtype.
    if (slot.kind != WeightKind::kLinear || slot.name.rfind("model.layers.", 0) != 0) continue;
    if (t.empty() || t.shape.size() != 2 || t.shape[1] % kFp8ColumnMultiple != 0) continue;
    if (t.format != WeightFormat::kNone && t.format != WeightFormat::kF16 &&
        t.format != WeightFormat::kBF16)
      continue;  // a GGUF block format, or FP8 already
    todo.push_back(&t);
  }
  // One tensor per task: a 7B model's linear weights are 6.5e9 values.
  ThreadPool pool;
  pool.parallel_for(todo.size(), [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      HostTensor& t = *todo[i];
      std::vector<float> values =
          t.format == WeightFormat::kNone ? std::move(t.data) : half_values(t);
      t.blocks = quantize_fp8_weight(values, t.shape[0], t.shape[1]);
      t.data = {};
      t.format = WeightFormat::kFP8;
    }
  });
  return todo.size();
}

}  // namespace

size_t quantize_weights(ModelWeights& weights, const ModelConfig& config, LoadQuantization q) {
  if (q == LoadQuantization::kNone) return 0;
  if (q == LoadQuantization::kFP8) return quantize_fp8(weights, config);
  size_t done = 0;
  for (const WeightSlot& slot : weight_slots(weights, config)) {
    HostTensor& t = *slot.tensor;
    if (slot.kind != WeightKind::kLinear && slot.kind != WeightKind::kEmbedding) continue;
    if (t.empty() || t.shape.size() != 2 || t.shape[1] % int64_t(kQ8Block) != 0) continue;
    if (t.format != WeightFormat::kNone && t.format != WeightFormat::kF16 &&
        t.format != WeightFormat::kBF16)
      continue;  // a GGUF block format: kept
    std::vector<float> values =
        t.format == WeightFormat::kNone ? std::move(t.data) : half_values(t);
    t.blocks = quantize_q8_0(values);
    t.data = {};
    t.format = WeightFormat::kQ8_0;
    ++done;
  }
  return done;
}

}  // namespace relayllm
