// The one BatchPlan builder: ranges into the block tables, slot mapping, prefix
// groups shared by key, positions and logit rows, for a mixed step.
#include "relayllm/backend/batch_plan_builder.h"

#include <gtest/gtest.h>

#include <vector>

#include "relayllm/common/error.h"

namespace relayllm {
namespace {

TEST(BatchPlanBuilder, MixedStepWithTwoSequencesSharingAPrefixAndOneWithout) {
  BatchPlanBuilder b(4);
  const std::vector<int32_t> prefix_blocks = {40, 41};  // 6 prefix tokens
  const std::vector<int32_t> own_a = {7, 3}, own_b = {9}, own_c = {5, 6, 8};
  const std::vector<int32_t> tokens_a = {11, 12, 13}, tokens_b = {21}, tokens_c = {31, 32};
  const int32_t g = b.prefix_group(17, 6, prefix_blocks);
  EXPECT_EQ(b.prefix_group(17, 6, prefix_blocks), g) << "one group per prefix key";
  // a: prefill of own tokens 2..4 (two already cached); b: decode of own token 0; c: no prefix.
  EXPECT_EQ(b.add_sequence({tokens_a, 2, own_a, g}), 0);
  EXPECT_EQ(b.add_sequence({tokens_b, 0, own_b, g}), 3);
  EXPECT_EQ(b.add_sequence({tokens_c, 9, own_c}), 4);
  b.add_logit_rows(2, 1);
  b.add_logit_rows(3, 2);
  const BatchPlan plan = b.take();

  EXPECT_EQ(plan.block_size, 4);
  EXPECT_EQ(plan.token_ids, (std::vector<int32_t>{11, 12, 13, 21, 31, 32}));
  EXPECT_EQ(plan.positions, (std::vector<int32_t>{8, 9, 10, 6, 9, 10}));
  EXPECT_EQ(plan.slot_mapping, (std::vector<int64_t>{7 * 4 + 2, 7 * 4 + 3, 3 * 4 + 0, 9 * 4 + 0,
                                                     8 * 4 + 1, 8 * 4 + 2}));
  EXPECT_EQ(plan.logit_rows, (std::vector<int32_t>{2, 3, 4}));
  ASSERT_EQ(plan.prefix_groups.size(), 1u);
  const PlannedPrefixGroup& group = plan.prefix_groups[0];
  EXPECT_EQ(group.prefix_len, 6);
  EXPECT_EQ(group.num_blocks, 2);
  EXPECT_EQ(group.query_rows, (std::vector<int32_t>{0, 1, 2, 3}));
  ASSERT_EQ(plan.sequences.size(), 3u);
  for (const PlannedSequence& s : plan.sequences) {
    std::vector<int32_t> table(plan.block_tables.begin() + s.block_table_start,
                               plan.block_tables.begin() + s.block_table_start + s.num_blocks);
    EXPECT_EQ(s.num_blocks, (s.context_len + 3) / 4);
    EXPECT_EQ(table.size(), size_t(s.num_blocks));
  }
  EXPECT_EQ(plan.sequences[0].context_len, 5);
  EXPECT_EQ(plan.sequences[0].position_offset, 6);
  EXPECT_EQ(plan.sequences[1].query_start, 3);
  EXPECT_EQ(plan.sequences[2].prefix_group, -1);
  EXPECT_EQ(plan.sequences[2].position_offset, 0);
  EXPECT_EQ(std::vector<int32_t>(plan.block_tables.begin() + group.block_table_start,
                                 plan.block_tables.begin() + group.block_table_start + 2),
            prefix_blocks);
}

TEST(BatchPlanBuilder, RefusesTablesThatDoNotCoverTheContext) {
  BatchPlanBuilder b(4);
  const std::vector<int32_t> one_block = {0}, tokens = {1, 2};
  EXPECT_THROW(b.add_sequence({tokens, 3, one_block}), Error);  // 5 tokens need 2 blocks
  EXPECT_THROW(b.prefix_group(0, 5, one_block), Error);
  EXPECT_THROW(b.add_sequence({tokens, 0, one_block, 0}), Error);  // no group 0
  EXPECT_THROW(b.add_logit_rows(0, 1), Error);                     // no rows yet
}

}  // namespace
}  // namespace relayllm
