// Fuzzes the safetensors reader: header length, header JSON, dtypes, shapes and data
// offsets, then conversion of every float tensor to fp32.
#include "fuzz_input.h"
#include "relayllm/formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  relayllm::fuzz::MemoryFile input(data, size);
  if (!input.ok()) return 0;
  relayllm::fuzz::refusal_allowed([&] {
    relayllm::SafetensorsFile file(input.path());
    for (const relayllm::TensorView& view : file.tensors()) {
      if (view.dtype == relayllm::SafetensorsDType::kOther || view.numel() > (1 << 20)) continue;
      std::vector<float> values = relayllm::to_float(view);
      if (values.size() != size_t(view.numel())) __builtin_trap();
    }
  });
  return 0;
}
