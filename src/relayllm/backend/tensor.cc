#include "relayllm/backend/tensor.h"

#include "relayllm/common/error.h"

namespace relayllm {

std::string dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "float32";
    case DType::kBF16:
      return "bfloat16";
    case DType::kF16:
      return "float16";
  }
  return "unknown";
}

WeightBlockLayout weight_block_layout(WeightFormat format) {
  switch (format) {
    case WeightFormat::kF16:
    case WeightFormat::kBF16:
      return {1, 2};
    case WeightFormat::kFP8:
      return {1, 1};
    case WeightFormat::kQ8_0:
      return {32, 34};
    case WeightFormat::kQ4_0:
      return {32, 18};
    case WeightFormat::kQ4_1:
      return {32, 20};
    case WeightFormat::kQ4_K:
      return {256, 144};
    case WeightFormat::kQ5_K:
      return {256, 176};
    case WeightFormat::kQ6_K:
      return {256, 210};
    case WeightFormat::kNone:
      break;
  }
  fail("weight format {} has no block layout", weight_format_name(format));
}

size_t weight_bytes(WeightFormat format, int64_t rows, int64_t cols) {
  const WeightBlockLayout b = weight_block_layout(format);
  const size_t body = size_t(rows) * size_t(cols / b.block_elements) * size_t(b.block_bytes);
  // kFP8: one fp32 weight scale per row, then one fp32 input scale (backend/fp8.h).
  return format == WeightFormat::kFP8 ? body + 4 * size_t(rows) + 4 : body;
}

std::string weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kNone:
      return "none";
    case WeightFormat::kF16:
      return "F16";
    case WeightFormat::kBF16:
      return "BF16";
    case WeightFormat::kQ8_0:
      return "Q8_0";
    case WeightFormat::kQ4_0:
      return "Q4_0";
    case WeightFormat::kQ4_1:
      return "Q4_1";
    case WeightFormat::kQ4_K:
      return "Q4_K";
    case WeightFormat::kQ5_K:
      return "Q5_K";
    case WeightFormat::kQ6_K:
      return "Q6_K";
    case WeightFormat::kFP8:
      return "FP8";
  }
  return "unknown";
}

DType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "float" || name == "fp32") return DType::kF32;
  if (name == "bfloat16" || name == "bf16") return DType::kBF16;
  if (name == "float16" || name == "half" || name == "fp16") return DType::kF16;
  fail("unknown dtype '{}' (expected float32, bfloat16 or float16)", name);
}

}  // namespace relayllm
