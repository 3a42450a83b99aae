// The AVX2 + FMA + F16C kernel table (this file alone is compiled with those flags; the
// dispatcher picks it only on a CPU that reports them).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "relayllm/backend/cpu/quant_kernels.h"

#define RELAYLLM_ISA_NAME "avx2"
#define RELAYLLM_TABLE_FN avx2_kernels

namespace relayllm::cpu_quant {
#include "relayllm/backend/cpu/quant_simd.inc"
}  // namespace relayllm::cpu_quant
