// The default size of a host (CPU) KV pool: what the configured workload can use, within a
// share of the machine's memory, instead of a fixed size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "relayllm/model/llama_model.h"

namespace relayllm {

// The share of physical memory a default host KV pool may take.
constexpr double kHostKvMemoryShare = 0.25;

// Bytes for `max_num_seqs` sequences of `max_model_len` tokens each (whole blocks of
// `block_size`; 0 max_model_len: the model's max_position_embeddings), capped at
// kHostKvMemoryShare of `physical_bytes`, and at least one block. Bytes per token are the
// model's: layers x KV heads x head dim x 2 (K and V) x the backend's KV dtype size.
size_t host_kv_budget_bytes(const LlamaModel& model, int32_t max_num_seqs, int32_t max_model_len,
                            int32_t block_size, size_t physical_bytes);

// This machine's physical memory (sysconf), for the cap above.
size_t physical_memory_bytes();

// The engine's kv_cache_budget for a CPU backend when the user gave no --kv-cache-memory
// (and no --num-kv-blocks); logs the pool it picks and why.
std::function<size_t(const LlamaModel&)> host_kv_budget(int32_t max_num_seqs, int32_t max_model_len,
                                                        int32_t block_size);

}  // namespace relayllm
