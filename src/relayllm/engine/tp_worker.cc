#include "relayllm/engine/tp_worker.h"

#include <spdlog/spdlog.h>

#include <optional>

#include "relayllm/common/error.h"
#include "relayllm/dist/communicator.h"
#include "relayllm/engine/model_runner.h"
#include "relayllm/engine/tp_channel.h"
#include "relayllm/model/llama_model.h"

namespace relayllm {

void run_tp_worker(const ModelConfig& config, const ModelWeights& weights,
                   std::unique_ptr<Backend> backend, std::shared_ptr<Communicator> comm) {
  RELAYLLM_CHECK(comm && comm->rank() != 0, "the tensor-parallel worker loop runs on ranks 1..N-1");
  TpChannel channel(comm);
  TpMessage first = channel.receive();
  if (first.kind == TpMessage::Kind::kStop) return;  // rank 0 failed before its engine ran
  RELAYLLM_CHECK(first.kind == TpMessage::Kind::kInit,
                 "tensor parallelism: rank {} expected the KV pool's size first", comm->rank());
  LlamaModel model(config, weights, *backend, first.init.max_positions, comm.get());
  std::vector<KvLayer> kv = model.allocate_kv_cache(first.init.num_blocks, first.init.block_size);
  ModelRunner runner(model);
  spdlog::debug("rank {}: {} KV blocks of {} tokens, {} of {} query heads, {} KV heads",
                comm->rank(), first.init.num_blocks, first.init.block_size, model.shard().num_heads,
                config.num_heads, model.shard().num_kv_heads);
  std::vector<float> logits;  // stays empty: only rank 0 computes logits
  for (;;) {
    TpMessage message = channel.receive();
    if (message.kind == TpMessage::Kind::kStop) return;
    RELAYLLM_CHECK(message.kind == TpMessage::Kind::kStep,
                   "tensor parallelism: rank {} got a second init message", comm->rank());
    runner.set_graph_policy(message.policy);
    runner.forward(message.plan, kv, logits);
  }
}

}  // namespace relayllm
