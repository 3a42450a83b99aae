// The relay prefix manager alone (a block pool and a stand-in for the KV
// computation): who holds blocks when, the quota of named prefixes, and the LRU
// eviction of automatic ones.
#include "relayllm/kv/relay_prefix_manager.h"

#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

#include "relayllm/common/error.h"

namespace relayllm {
namespace {

std::vector<int32_t> tokens(int32_t n, int32_t first = 1) {
  std::vector<int32_t> out(static_cast<size_t>(n));
  std::iota(out.begin(), out.end(), first);
  return out;
}

struct Fixture {
  BlockPool pool{64, 4};
  std::vector<std::string> computed;
  RelayPrefixManager manager{pool,
                             [](const std::string& name, std::span<const int32_t> t) {
                               RELAYLLM_CHECK(t.size() < 100, "relay prefix '{}' is too long",
                                              name);
                             },
                             [this](const RelayPrefix& p) { computed.push_back(p.name); }};
};

TEST(RelayPrefixManager, AddTakesBlocksAndComputesOnce) {
  Fixture f;
  const RelayPrefix& p = f.manager.add("sys", tokens(10));
  EXPECT_TRUE(p.ready);
  EXPECT_EQ(p.blocks.size(), 3u);
  EXPECT_EQ(f.pool.num_free(), 61);
  EXPECT_EQ(f.computed, std::vector<std::string>{"sys"});
  EXPECT_THROW(f.manager.add("sys", tokens(3)), Error);
  EXPECT_THROW(f.manager.add("empty", {}), Error);
  EXPECT_THROW(f.manager.add("long", tokens(200)), Error);  // the engine's check
  EXPECT_EQ(f.pool.num_free(), 61);
  f.pool.check_consistency();
}

TEST(RelayPrefixManager, RemovedWhileInUseFreesAtLastRelease) {
  Fixture f;
  RelayPrefix* p = const_cast<RelayPrefix*>(&f.manager.add("p", tokens(8)));
  f.manager.attach(*p);
  f.manager.attach(*p);
  f.manager.remove("p");
  EXPECT_EQ(f.manager.find("p"), nullptr) << "no new request attaches";
  EXPECT_EQ(f.manager.size(), 1u);
  EXPECT_EQ(f.pool.num_free(), 62);
  f.manager.release(*p);
  EXPECT_EQ(f.pool.num_free(), 62);
  f.manager.release(*p);
  EXPECT_EQ(f.manager.size(), 0u);
  EXPECT_EQ(f.pool.num_free(), 64);
  EXPECT_THROW(f.manager.remove("p"), Error);
  f.pool.check_consistency();
}

TEST(RelayPrefixManager, LongestMatchSkipsRemovingAndNeedsAnOwnToken) {
  Fixture f;
  f.manager.add("short", tokens(4));
  f.manager.add("long", tokens(8));
  const std::vector<int32_t> prompt = tokens(9);
  EXPECT_EQ(f.manager.longest_match(prompt)->name, "long");
  EXPECT_EQ(f.manager.longest_match(tokens(8))->name, "short") << "one own token must remain";
  f.manager.remove("long");
  EXPECT_EQ(f.manager.longest_match(prompt)->name, "short");
}

TEST(RelayPrefixManager, NamedQuotaCountsNamedOnly) {
  Fixture f;
  f.manager.set_limits({2, 8, 1});
  EXPECT_EQ(f.manager.check_named("a"), PrefixRefusal::kNone);
  f.manager.add("a", tokens(4));
  f.manager.use_automatic(tokens(6, 50));
  EXPECT_EQ(f.manager.check_named("a"), PrefixRefusal::kExists);
  EXPECT_EQ(f.manager.check_named("b"), PrefixRefusal::kNone);
  f.manager.add("b", tokens(4, 20));
  EXPECT_EQ(f.manager.check_named("c"), PrefixRefusal::kQuotaFull);
}

TEST(RelayPrefixManager, AutomaticPrefixesAreNamedReusedAndEvictedLeastRecentlyUsedFirst) {
  Fixture f;
  f.manager.set_limits({64, 2, 2});
  f.manager.use_automatic(tokens(7, 100));  // shorter than 2 blocks of 4: not worth it
  EXPECT_EQ(f.manager.size(), 0u);
  const std::vector<int32_t> a = tokens(8, 100), b = tokens(8, 200), c = tokens(8, 300);
  f.manager.use_automatic(a);
  f.manager.use_automatic(b);
  f.manager.use_automatic(a);  // a is now the most recently used
  EXPECT_EQ(f.computed.size(), 2u) << "a live prefix is not computed again";
  RelayPrefix* live_a = f.manager.find(RelayPrefixManager::automatic_name(a));
  ASSERT_NE(live_a, nullptr);
  EXPECT_TRUE(live_a->automatic);
  f.manager.use_automatic(c);  // evicts b, the least recently used
  EXPECT_NE(f.manager.find(RelayPrefixManager::automatic_name(a)), nullptr);
  EXPECT_EQ(f.manager.find(RelayPrefixManager::automatic_name(b)), nullptr);
  EXPECT_NE(f.manager.find(RelayPrefixManager::automatic_name(c)), nullptr);
  // With every automatic prefix in use, none is evicted and the new one is not registered.
  f.manager.attach(*f.manager.find(RelayPrefixManager::automatic_name(a)));
  f.manager.attach(*f.manager.find(RelayPrefixManager::automatic_name(c)));
  f.manager.use_automatic(b);
  EXPECT_EQ(f.manager.find(RelayPrefixManager::automatic_name(b)), nullptr);
  EXPECT_EQ(f.manager.size(), 2u);
  f.pool.check_consistency();
}

TEST(RelayPrefixManager, AutomaticPrefixNeverTakesMoreThanHalfTheFreePool) {
  Fixture f;
  f.manager.set_limits({64, 8, 1});
  f.manager.use_automatic(tokens(4 * 33, 1));  // 33 blocks of 64 free
  EXPECT_EQ(f.manager.size(), 0u);
  f.manager.use_automatic(tokens(4 * 32 - 40, 1));  // 22 blocks: fits
  EXPECT_EQ(f.manager.size(), 1u);
}

TEST(RelayPrefixManager, AutomaticNamesDependOnEveryToken) {
  const std::vector<int32_t> a = tokens(8), b = {1, 2, 3, 4, 5, 6, 7, 9};
  EXPECT_EQ(RelayPrefixManager::automatic_name(a), RelayPrefixManager::automatic_name(tokens(8)));
  EXPECT_NE(RelayPrefixManager::automatic_name(a), RelayPrefixManager::automatic_name(b));
  EXPECT_EQ(RelayPrefixManager::automatic_name(a).rfind("chat-system-", 0), 0u);
}

}  // namespace
}  // namespace relayllm
