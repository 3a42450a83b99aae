// The AVX-512 VNNI kernel table (this file alone is compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx512vnni; the dispatcher picks it only on a CPU that reports all four).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "relayllm/backend/cpu/quant_kernels.h"

#define RELAYLLM_ISA_NAME "avx512vnni"
#define RELAYLLM_TABLE_FN avx512_kernels
#define RELAYLLM_USE_VNNI 1

namespace relayllm::cpu_quant {
#include "relayllm/backend/cpu/quant_simd.inc"
}  // namespace relayllm::cpu_quant
