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

DType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "float" || name == "fp32") return DType::kF32;
  if (name == "bfloat16" || name == "bf16") return DType::kBF16;
  if (name == "float16" || name == "half" || name == "fp16") return DType::kF16;
  fail("unknown dtype '{}' (expected float32, bfloat16 or float16)", name);
}

}  // namespace relayllm
