// `--quantization q8_0`: linear and embedding weights quantized to Q8_0 blocks at load
// (from fp32, BF16 or F16; weights already in a GGUF block format stay as they are), for a
// backend whose kernels run Q8_0. Q8_0 is llama.cpp's 8-bit format: per 32 values one fp16
// scale d = max|w| / 127 and 32 int8 q = round(w / d), so w ~= d q.
// `--quantization fp8`: the decoder layers' linear weights (not the embedding, not lm_head, as
// vLLM) to e4m3 with one scale per output row (backend/fp8_weight.h), for a backend that runs
// FP8 GEMMs; activations are quantized per token by the op.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"

namespace relayllm {

enum class LoadQuantization { kNone, kQ8_0, kFP8 };

// vLLM's flag values: "" / "none" / "None" / "gguf" (a GGUF file's own formats) are kNone;
// "q8_0" is kQ8_0, "fp8" kFP8. Anything else throws Error with one line naming the value.
LoadQuantization parse_load_quantization(const std::string& name);

// Q8_0 blocks of `values` (a whole number of 32-value blocks), as llama.cpp's reference
// quantizer writes them (round half away from zero).
std::vector<std::byte> quantize_q8_0(std::span<const float> values);

// The weight format `q` produces (kNone for kNone).
WeightFormat quantized_format(LoadQuantization q);

// kQ8_0: quantizes every linear and embedding weight of `weights` whose rows are whole 32-value
// blocks and which is fp32, BF16 or F16; kFP8: every decoder-layer linear weight in those
// dtypes whose rows are a multiple of 16 values. The others are left as they are. Returns how
// many tensors were quantized.
size_t quantize_weights(ModelWeights& weights, const ModelConfig& config, LoadQuantization q);

}  // namespace relayllm
