// FP8 checkpoints in the compressed-tensors format (what llm-compressor writes and vLLM reads):
// config.json carries
//   "quantization_config": {"quant_method": "compressed-tensors", "format": "float-quantized",
//     "config_groups": {"group_0": {"targets": ["Linear"],
//       "weights": {"num_bits": 8, "type": "float", "strategy": "channel" | "tensor", ...},
//       "input_activations": {"num_bits": 8, "type": "float", "dynamic": true,
//                             "strategy": "token"}   (or dynamic false, strategy "tensor")}},
//     "ignore": ["lm_head"]}
// and each quantized linear layer stores `<name>.weight` as F8_E4M3 [out, in] with
// `<name>.weight_scale` (F32/BF16/F16, [out, 1] per channel or [1] / [] per tensor) and, for
// static activations, `<name>.input_scale` ([1] / []). The dequantized weight is
// weight_scale * weight. Everything else (other methods, bit widths, strategies, a KV cache
// scheme) is refused with one line naming the field and its value.
#pragma once

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "relayllm/formats/safetensors.h"
#include "relayllm/model/model_weights.h"

namespace relayllm {

struct Fp8CheckpointScheme {
  bool per_channel = true;    // weights.strategy: channel (else tensor)
  bool static_input = false;  // input_activations: static per-tensor scale (else per token)
};

// The scheme of config.json's quantization_config (`config` is the whole config.json), or
// nullopt when there is none. `source` names the file in errors.
std::optional<Fp8CheckpointScheme> parse_quantization_config(const nlohmann::json& config,
                                                             const std::string& source);
// The same, read from <model_dir>/config.json (nullopt when the file is absent).
std::optional<Fp8CheckpointScheme> read_quantization_config(const std::filesystem::path& model_dir);

using TensorLookup = std::function<const TensorView*(const std::string&)>;

// Reads the F8_E4M3 weight `view` (a linear layer's `<name>.weight`) with its scales found
// through `lookup`, into `out`: kept as WeightFormat::kFP8 when `keep_fp8` and its columns
// allow (kFp8ColumnMultiple), else dequantized to fp32 (weight_scale * value).
void load_fp8_linear(const TensorView& view, const Fp8CheckpointScheme& scheme,
                     const TensorLookup& lookup, bool keep_fp8, HostTensor& out);

}  // namespace relayllm
