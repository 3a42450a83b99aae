// Which quantized-kernel table this CPU can run, decided from CPUID at run time.
#pragma once

#include <string>
#include <vector>

#include "relayllm/backend/cpu/quant_kernels.h"

namespace relayllm::cpu_quant {

// Every table this binary has whose instructions this CPU supports, best last
// (portable first). Tests run each of them.
std::vector<const QuantKernels*> usable_quant_kernels();

// The best usable table, or the one named by `isa` ("portable", "avx2", "avx512vnni";
// empty or "auto": the best). Naming a table this CPU cannot run fails with one line.
const QuantKernels& select_quant_kernels(const std::string& isa = "");

}  // namespace relayllm::cpu_quant
