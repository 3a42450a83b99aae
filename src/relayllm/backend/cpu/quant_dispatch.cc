#include "relayllm/backend/cpu/quant_dispatch.h"

#include "relayllm/common/error.h"

#if defined(RELAYLLM_X86_KERNELS)
#include <cpuid.h>
#endif

namespace relayllm::cpu_quant {

#if defined(RELAYLLM_X86_KERNELS)
namespace {

// F16C from CPUID leaf 1 directly: clang before 16 does not know "f16c" in
// __builtin_cpu_supports (the sanitizer and fuzzing builds use clang). The OS's support of
// the YMM state that F16C needs is checked by the "avx2" test next to it.
bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
}

}  // namespace
#endif

std::vector<const QuantKernels*> usable_quant_kernels() {
  std::vector<const QuantKernels*> tables{&portable_kernels()};
#if defined(RELAYLLM_X86_KERNELS)
  // The AVX2 table also uses FMA and F16C (half weights); every AVX2 CPU made has both,
  // but they are separate CPUID bits, so each is checked.
  const bool avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
  if (avx2) tables.push_back(&avx2_kernels());
  // The AVX-512 table runs 256-bit VNNI dot products (vpdpbusd on ymm registers), so it
  // needs AVX512F, BW and VL besides VNNI.
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
    tables.push_back(&avx512_kernels());
#endif
  return tables;
}

const QuantKernels& select_quant_kernels(const std::string& isa) {
  std::vector<const QuantKernels*> tables = usable_quant_kernels();
  if (isa.empty() || isa == "auto") return *tables.back();
  std::string names;
  for (const QuantKernels* t : tables) {
    if (t->isa == isa) return *t;
    names += names.empty() ? t->isa : std::string(", ") + t->isa;
  }
  fail("cpu kernels '{}' cannot run on this CPU or are not built in (usable here: {})", isa, names);
}

}  // namespace relayllm::cpu_quant
