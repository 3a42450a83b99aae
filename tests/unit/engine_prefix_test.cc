// Attaching requests to relay prefixes: the longest token-exact match by default,
// a named prefix when the request names one, and clear refusals otherwise.
#include <gtest/gtest.h>

#include "relayllm/common/error.h"
#include "tiny_models.h"

namespace relayllm {
namespace {

std::unique_ptr<Engine> relay_engine() {
  EngineConfig config;
  config.block_size = 4;
  config.num_kv_blocks = 64;
  config.enable_relay_attention = true;
  return testing::make_tiny_engine("llama2", config);
}

TEST(EnginePrefix, LongestMatchOrTheNamedOne) {
  auto engine = relay_engine();
  std::vector<int32_t> short_prefix = {5, 6, 7, 8, 9};
  std::vector<int32_t> long_prefix = {5, 6, 7, 8, 9, 10, 11, 12};
  engine->register_prefix("short", short_prefix);
  engine->register_prefix("long", long_prefix);
  std::vector<int32_t> prompt = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
  SamplingParams params;
  params.max_tokens = 2;
  int64_t by_rule = engine->add_request(prompt, params);
  int64_t by_name = engine->add_request(prompt, params, "short");
  EXPECT_EQ(engine->find(by_rule)->prefix_len, 8);
  EXPECT_EQ(engine->find(by_name)->prefix_len, 5);
  // A prompt that is exactly the prefix leaves no own token: no attachment.
  int64_t exact = engine->add_request(long_prefix, params);
  EXPECT_EQ(engine->find(exact)->prefix_len, 5);
  while (engine->has_unfinished()) engine->step();
}

TEST(EnginePrefix, NamedPrefixRefusalsLeakNothing) {
  auto engine = relay_engine();
  const RelayPrefix& prefix = engine->register_prefix("p", {1, 2, 3, 4, 5});
  SamplingParams params;
  EXPECT_THROW(engine->add_request({9, 9, 9}, params, "p"), Error);        // not a prefix
  EXPECT_THROW(engine->add_request({1, 2, 3, 4, 5}, params, "p"), Error);  // nothing after it
  EXPECT_THROW(engine->add_request({1, 2, 3, 4, 5, 6}, params, "nope"), Error);
  params.prompt_logprobs = 1;
  EXPECT_THROW(engine->add_request({1, 2, 3, 4, 5, 6}, params, "p"), Error);
  EXPECT_EQ(prefix.users, 0);
  int32_t free_before = engine->block_pool().num_free();
  engine->remove_prefix("p");
  EXPECT_EQ(engine->block_pool().num_free(), free_before + 2);
}

}  // namespace
}  // namespace relayllm
