// Dequantization of ggml tensor data to fp32, written from the block layouts of the
// GGUF format description. Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "relayllm/formats/gguf_file.h"

namespace relayllm {

bool gguf_can_dequantize(GgmlType type);

// Converts `num_blocks` whole blocks starting at block `first_block` of `data` (the tensor's
// bytes) into out[0 .. num_blocks * block_elements). The caller checks bounds and type.
void dequantize_blocks(GgmlType type, std::span<const std::byte> data, size_t first_block,
                       size_t num_blocks, float* out);

}  // namespace relayllm
