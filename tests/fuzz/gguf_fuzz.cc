// Fuzzes the GGUF reader: header, metadata and tensor table, then the model config and
// tokenizer built from the metadata, then dequantization of a model small enough to load.
#include "fuzz_input.h"
#include "relayllm/formats/gguf_file.h"
#include "relayllm/model/gguf_model.h"
#include "relayllm/model/model_limits.h"
#include "relayllm/tokenizer/gguf_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  relayllm::fuzz::MemoryFile input(data, size);
  if (!input.ok()) return 0;
  relayllm::fuzz::refusal_allowed([&] {
    relayllm::GgufFile file(input.path());
    relayllm::fuzz::refusal_allowed([&] {
      relayllm::Tokenizer tokenizer = relayllm::load_gguf_tokenizer(file);
      (void)tokenizer.decode(tokenizer.encode("hello world", true), false);
    });
    relayllm::ModelConfig config = relayllm::gguf_model_config(file);
    // Dequantize only what stays small, so each run takes milliseconds.
    relayllm::check_model_fits(config, "fuzz.gguf", uint64_t(16) << 20);
    (void)relayllm::load_gguf_weights(file, config);
  });
  return 0;
}
