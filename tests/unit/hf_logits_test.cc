// The CPU backend's forward against Hugging Face transformers: tiny random-weight
// models of each architecture, saved by transformers with the logits it computed
// (tests/data/hf_fixtures, made by tools/make_hf_fixtures.py). Checked through the
// paged path in several ways — whole prompt, chunks, token by token, and with a
// relay prefix — all of which must match the same reference rows.
#include <gtest/gtest.h>

#include <cmath>

#include "../common/hf_fixture.h"
#include "../common/paged_forward.h"
#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/model/llama_model.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"

namespace relayllm {
namespace {

using testing::relative_error;
using testing::run_paged;

// fp32 on both sides, different summation orders: errors sit near 1e-6 relative
// to the largest logit; the bound leaves room for that and nothing more.
constexpr double kRelativeBound = 2e-5;

class HfLogits : public ::testing::TestWithParam<std::string> {};

TEST_P(HfLogits, PagedForwardMatchesTransformers) {
  testing::HfFixture f = testing::load_hf_fixture(GetParam());
  CpuBackend backend(2);
  LlamaModel model(f.config, f.weights, backend, f.config.max_position_embeddings);
  double worst = 0;
  for (size_t s = 0; s < f.inputs.size(); ++s) {
    const auto& tokens = f.inputs[s];
    const int32_t n = int32_t(tokens.size());
    struct Variant {
      const char* name;
      int32_t prefix_len;
      int32_t chunk;
    };
    const Variant variants[] = {
        {"whole prompt", 0, n},           {"chunks of 5", 0, 5},
        {"token by token", 0, 1},         {"relay prefix 7, whole rest", 7, n},
        {"relay prefix 9, decode", 9, 1}, {"relay prefix n-1", n - 1, 1},
    };
    for (const Variant& v : variants) {
      auto rows = run_paged(model, tokens, v.prefix_len, v.chunk);
      ASSERT_EQ(int32_t(rows.size()), n - v.prefix_len);
      for (int32_t r = 0; r < int32_t(rows.size()); ++r) {
        const auto& want = f.logits[s][v.prefix_len + r];
        double error = relative_error(rows[r], want);
        worst = std::max(worst, error);
        EXPECT_LT(error, kRelativeBound) << GetParam() << " sequence " << s << " (" << v.name
                                         << ") position " << v.prefix_len + r;
      }
    }
  }
  std::printf("%s: worst relative error %.2e over all positions and variants\n", GetParam().c_str(),
              worst);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfLogits,
                         ::testing::Values("llama2", "llama3", "mistral", "qwen2", "qwen3"));

}  // namespace
}  // namespace relayllm
