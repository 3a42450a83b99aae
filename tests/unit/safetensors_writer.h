// Test helper: writes .safetensors files (single or sharded with an index) and
// whole model folders from C++, so loader tests build their inputs in a temp dir.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "relayllm/common/half.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"

namespace relayllm::test {

struct TensorBlob {
  std::string name;
  std::string dtype;  // header dtype string, any value (tests write bad ones on purpose)
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

inline TensorBlob f32_blob(std::string name, std::vector<int64_t> shape,
                           const std::vector<float>& values) {
  TensorBlob blob{std::move(name), "F32", std::move(shape),
                  std::vector<uint8_t>(values.size() * 4)};
  // memcpy's pointers must not be null even for zero bytes (an empty vector's data() may be).
  if (!values.empty()) std::memcpy(blob.bytes.data(), values.data(), blob.bytes.size());
  return blob;
}

inline TensorBlob half_blob(std::string name, std::vector<int64_t> shape,
                            const std::vector<float>& values, bool bf16) {
  TensorBlob blob{std::move(name), bf16 ? "BF16" : "F16", std::move(shape),
                  std::vector<uint8_t>(values.size() * 2)};
  for (size_t i = 0; i < values.size(); ++i) {
    uint16_t bits = bf16 ? float_to_bf16(values[i]) : float_to_fp16(values[i]);
    std::memcpy(blob.bytes.data() + 2 * i, &bits, 2);
  }
  return blob;
}

// Lays the blobs out back to back in the order given. `header_padding` spaces after
// the JSON make the data section start unaligned when odd, as some writers leave it.
inline void write_safetensors(const std::filesystem::path& path,
                              const std::vector<TensorBlob>& blobs, size_t header_padding = 0) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const TensorBlob& blob : blobs) {
    header[blob.name] = {{"dtype", blob.dtype},
                         {"shape", blob.shape},
                         {"data_offsets", {offset, offset + blob.bytes.size()}}};
    offset += blob.bytes.size();
  }
  std::string text = header.dump() + std::string(header_padding, ' ');
  uint64_t length = text.size();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (int i = 0; i < 8; ++i) out.put(char((length >> (8 * i)) & 0xff));
  out.write(text.data(), std::streamsize(text.size()));
  for (const TensorBlob& blob : blobs)
    out.write(reinterpret_cast<const char*>(blob.bytes.data()), std::streamsize(blob.bytes.size()));
}

// Writes shards model-0000k-of-0000n.safetensors and model.safetensors.index.json.
inline void write_sharded(const std::filesystem::path& dir,
                          const std::vector<std::vector<TensorBlob>>& shards) {
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t k = 0; k < shards.size(); ++k) {
    std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", k + 1, shards.size());
    write_safetensors(dir / file, shards[k]);
    for (const TensorBlob& blob : shards[k]) weight_map[blob.name] = file;
  }
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);
}

// The HF-named tensors of `weights` as blobs of the given dtype ("F32", "F16", "BF16").
inline std::vector<TensorBlob> weight_blobs(const ModelWeights& weights, const ModelConfig& config,
                                            const std::string& dtype = "F32") {
  ModelWeights copy = weights;  // weight_slots binds mutable pointers
  std::vector<TensorBlob> blobs;
  for (const WeightSlot& slot : weight_slots(copy, config)) {
    if (dtype == "F32") {
      blobs.push_back(f32_blob(slot.name, slot.shape, slot.tensor->data));
    } else {
      blobs.push_back(half_blob(slot.name, slot.shape, slot.tensor->data, dtype == "BF16"));
    }
  }
  return blobs;
}

inline void write_json(const std::filesystem::path& path, const nlohmann::json& json) {
  std::ofstream(path) << json.dump(2);
}

// A small Llama-style config.json as HF would write it; tests patch fields as needed.
inline nlohmann::json tiny_config_json(const std::string& architecture = "LlamaForCausalLM") {
  return {{"architectures", {architecture}},
          {"vocab_size", 40},
          {"hidden_size", 32},
          {"intermediate_size", 48},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"max_position_embeddings", 128},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"tie_word_embeddings", false},
          {"torch_dtype", "float32"},
          {"bos_token_id", 1},
          {"eos_token_id", 2}};
}

}  // namespace relayllm::test
