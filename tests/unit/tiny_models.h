// Tiny random-weight models of every supported architecture, for engine tests.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/engine/engine.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"
#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm::testing {

inline std::vector<std::string> tiny_architectures() {
  return {"llama2", "llama3", "mistral", "qwen2", "qwen3"};
}

inline ModelConfig tiny_config(const std::string& kind, int64_t vocab_size) {
  ModelConfig c;
  c.vocab_size = vocab_size;
  c.hidden_size = 48;
  c.intermediate_size = 96;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 12;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 512;
  c.architecture = "LlamaForCausalLM";
  if (kind == "llama3") {
    c.rope.type = RopeType::kLlama3;
    c.rope.theta = 500000;
    c.rope.factor = 8;
    c.rope.low_freq_factor = 1;
    c.rope.high_freq_factor = 4;
    c.rope.original_max_position_embeddings = 64;
    c.tie_word_embeddings = true;
  } else if (kind == "mistral") {
    c.architecture = "MistralForCausalLM";
    c.num_kv_heads = 1;  // GQA ratio 4
  } else if (kind == "qwen2") {
    c.architecture = "Qwen2ForCausalLM";
    c.qkv_bias = true;
    c.rope.theta = 1000000;
  } else if (kind == "qwen3") {
    c.architecture = "Qwen3ForCausalLM";
    c.qk_norm = true;
    c.head_dim = 16;  // explicit, differs from hidden / heads
  }
  return c;
}

inline std::unique_ptr<Engine> make_tiny_engine(const std::string& kind, EngineConfig config,
                                                uint64_t seed = 7) {
  Tokenizer tokenizer = Tokenizer::make_byte_tokenizer();
  ModelConfig model = tiny_config(kind, tokenizer.vocab_size());
  ModelWeights weights = make_dummy_weights(model, seed);
  return std::make_unique<Engine>(model, weights, std::move(tokenizer),
                                  std::make_unique<CpuBackend>(2), config);
}

}  // namespace relayllm::testing
