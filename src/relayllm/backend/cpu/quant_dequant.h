// Block-format weight rows back to fp32, for the ops that read a weight row as values
// (the embedding lookup of a quantized token table) and for the tests' fp32 oracle.
#pragma once

#include <cstdint>

#include "relayllm/backend/tensor.h"

namespace relayllm::cpu_quant {

// Decodes k values (whole blocks of `format`) starting at `row`.
void dequantize_row(WeightFormat format, const void* row, int64_t k, float* out);

}  // namespace relayllm::cpu_quant
