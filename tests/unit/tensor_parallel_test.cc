// Tensor parallelism without MPI: each rank's weights read from a safetensors checkpoint or
// drawn as dummy weights are exactly that rank's slices of the whole model, and the step
// message rank 0 broadcasts round-trips (the forward under MPI: tests/mpi).
#include "relayllm/model/tensor_parallel.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "../common/temp_dir.h"
#include "relayllm/engine/tp_channel.h"
#include "relayllm/model/model_loader.h"
#include "safetensors_writer.h"
#include "tiny_models.h"

namespace relayllm {
namespace {

// The whole model's weights cut by hand, for comparison.
ModelWeights cut(ModelWeights whole, const ModelConfig& c, const ShardLayout& shard) {
  ModelWeights part = whole;
  std::vector<WeightSlot> from = weight_slots(whole, c), to = weight_slots(part, c);
  for (size_t i = 0; i < from.size(); ++i)
    *to[i].tensor = slice_host_tensor(*from[i].tensor, weight_slice(from[i], shard));
  return part;
}

void expect_same(ModelWeights a, ModelWeights b, const ModelConfig& c, const std::string& what) {
  std::vector<WeightSlot> x = weight_slots(a, c), y = weight_slots(b, c);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(x[i].tensor->shape, y[i].tensor->shape) << what << " " << x[i].name;
    EXPECT_EQ(x[i].tensor->data, y[i].tensor->data) << what << " " << x[i].name;
  }
}

TEST(TensorParallelLoading, EachRankReadsItsSlicesOfSafetensorsAndDummyWeights) {
  for (const std::string& arch : testing::tiny_architectures()) {
    Tokenizer tokenizer = Tokenizer::make_byte_tokenizer();
    const ModelConfig c = testing::tiny_config(arch, tokenizer.vocab_size());
    const ModelWeights whole = make_dummy_weights(c, 3);
    testing::TempDir dir("relayllm_tp");
    test::write_safetensors(dir.path() / "model.safetensors", test::weight_blobs(whole, c));
    for (int size : {2, 4})
      for (int rank = 0; rank < size; ++rank) {
        const ShardLayout shard = shard_layout(c, rank, size);
        const ModelWeights want = cut(whole, c, shard);
        const std::string what = fmt::format("{} rank {} of {}", arch, rank, size);
        expect_same(load_weights(dir.path(), c, nullptr, {}, &shard), want, c,
                    what + " safetensors");
        expect_same(make_dummy_weights(c, 3, nullptr, &shard), want, c, what + " dummy");
        // Local shapes: the heads and columns of one rank.
        const LayerWeights& l = want.layers[0];
        EXPECT_EQ(l.q_proj.shape[0], shard.num_heads * c.head_dim) << what;
        EXPECT_EQ(l.k_proj.shape[0], shard.num_kv_heads * c.head_dim) << what;
        EXPECT_EQ(l.o_proj.shape[1], shard.num_heads * c.head_dim) << what;
        EXPECT_EQ(l.down_proj.shape[1], c.intermediate_size / size) << what;
        if (c.qkv_bias) EXPECT_EQ(l.v_bias.shape[0], shard.num_kv_heads * c.head_dim) << what;
      }
  }
}

TEST(TensorParallelChannel, StepMessagesRoundTrip) {
  TpMessage m;
  m.kind = TpMessage::Kind::kStep;
  m.policy = {true, 24};
  BatchPlan& p = m.plan;
  p.block_size = 4;
  p.token_ids = {5, 6, 7};
  p.positions = {40, 41, 2};
  p.slot_mapping = {int64_t(1) << 40, 3, 9};
  p.sequences = {{0, 2, 9, 37, 0, 3, 0}, {2, 1, 3, 0, 3, 1, -1}};
  p.block_tables = {1, 2, 3, 4, 8, 9};
  p.logit_rows = {1, 2};
  p.prefix_groups = {{37, 4, 10, {0, 1}, -1}, {8, 14, 2, {0}, 0}};
  const std::vector<uint8_t> bytes = encode_tp_message(m);
  const TpMessage back = decode_tp_message(bytes);
  EXPECT_EQ(back.kind, m.kind);
  EXPECT_EQ(back.policy.enabled, true);
  EXPECT_EQ(back.policy.max_batch, 24);
  EXPECT_EQ(back.plan.token_ids, p.token_ids);
  EXPECT_EQ(back.plan.positions, p.positions);
  EXPECT_EQ(back.plan.slot_mapping, p.slot_mapping);
  EXPECT_EQ(back.plan.block_tables, p.block_tables);
  EXPECT_EQ(back.plan.logit_rows, p.logit_rows);
  ASSERT_EQ(back.plan.sequences.size(), 2u);
  EXPECT_EQ(back.plan.sequences[0].position_offset, 37);
  EXPECT_EQ(back.plan.sequences[1].prefix_group, -1);
  ASSERT_EQ(back.plan.prefix_groups.size(), 2u);
  EXPECT_EQ(back.plan.prefix_groups[1].query_rows, std::vector<int32_t>{0});
  EXPECT_EQ(back.plan.prefix_groups[1].parent, 0);
  // Every cut short of the whole message is refused, never read past.
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + std::ptrdiff_t(n));
    EXPECT_THROW(decode_tp_message(cut), Error) << n;
  }
  TpMessage init;
  init.kind = TpMessage::Kind::kInit;
  init.init = {100, 16, 4096};
  EXPECT_EQ(decode_tp_message(encode_tp_message(init)).init.num_blocks, 100);
}

}  // namespace
}  // namespace relayllm
