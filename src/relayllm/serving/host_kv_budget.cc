#include "relayllm/serving/host_kv_budget.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>

namespace relayllm {

size_t host_kv_budget_bytes(const LlamaModel& model, int32_t max_num_seqs, int32_t max_model_len,
                            int32_t block_size, size_t physical_bytes) {
  const int64_t len = max_model_len > 0 ? max_model_len : model.config().max_position_embeddings;
  const size_t per_block = model.kv_bytes_per_block(block_size);
  const size_t blocks_per_seq = size_t((std::max<int64_t>(len, 1) + block_size - 1) / block_size);
  const size_t wanted = size_t(std::max(max_num_seqs, 1)) * blocks_per_seq * per_block;
  const size_t cap = size_t(kHostKvMemoryShare * double(physical_bytes));
  return std::max(std::min(wanted, cap), per_block);
}

size_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? size_t(pages) * size_t(page) : size_t(4) << 30;
}

std::function<size_t(const LlamaModel&)> host_kv_budget(int32_t max_num_seqs, int32_t max_model_len,
                                                        int32_t block_size) {
  return [=](const LlamaModel& model) {
    const size_t physical = physical_memory_bytes();
    const size_t bytes =
        host_kv_budget_bytes(model, max_num_seqs, max_model_len, block_size, physical);
    const size_t per_token = model.kv_bytes_per_block(1);
    spdlog::info(
        "kv cache: {:.0f} MiB, {} tokens of {} B, for --max-num-seqs {} x --max-model-len {} "
        "within {:.0f}% of {:.1f} GiB of memory (--kv-cache-memory sets it)",
        double(bytes) / double(1 << 20), bytes / per_token, per_token, max_num_seqs,
        max_model_len > 0 ? int64_t(max_model_len) : model.config().max_position_embeddings,
        kHostKvMemoryShare * 100, double(physical) / double(size_t(1) << 30));
    return bytes;
  };
}

}  // namespace relayllm
