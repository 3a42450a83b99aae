// The forward with weights in a block format, end to end: the HF fixtures' weights (every
// linear and the token table) quantized to Q8_0 / Q4_0 blocks here, run by the CPU backend's
// block kernels (every usable kernel table), against
//  (1) the same blocks dequantized and run on the fp32 reference path: what differs is
//      only the 8-bit activation quantization of the block kernels, and
//  (2) transformers' logits of the original weights: weight quantization error on top.
// Bounds (relative L2 error of a logits row). Each linear's input is rounded to 8 bits per
// 32 values (rms error ~ max/127/sqrt(12) per value); the fixtures are tiny random models
// (hidden 64: two blocks per row, so one large value sets the scale of half the row) whose
// logits amplify that through 2 layers of 7 linears. Measured worst cases over the five
// fixtures, both formats and both tables here: 3.5e-2 vs the fp32 path (Q4_0, qwen2) and
// 5.7e-2 vs transformers (Q8_0, qwen3: weight rounding on top). The bounds, 6e-2 and 1e-1,
// leave ~1.7x headroom; a layout bug (a nibble half swapped, a scale or offset lost) moves
// whole blocks of every weight row, which shows at order-one relative error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "../common/hf_fixture.h"
#include "../common/paged_forward.h"
#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/backend/cpu/quant_dispatch.h"
#include "relayllm/common/half.h"
#include "relayllm/formats/gguf_dequant.h"
#include "relayllm/model/llama_model.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"

namespace relayllm {
namespace {

using testing::relative_error;
using testing::run_paged;

// Quantizes `t` in place to Q8_0 or Q4_0 blocks (as llama.cpp's reference quantizers:
// Q8_0 d = max|x| / 127; Q4_0 d = -(signed value of largest magnitude) / 8), and returns
// the fp32 values those blocks decode to (by formats/gguf_dequant).
std::vector<float> quantize(HostTensor& t, WeightFormat f) {
  const size_t n = t.data.size();
  const size_t bb = f == WeightFormat::kQ8_0 ? 34 : 18;
  std::vector<std::byte> bytes(n / 32 * bb);
  for (size_t b = 0; b < n / 32; ++b) {
    const float* x = t.data.data() + 32 * b;
    uint8_t* out = reinterpret_cast<uint8_t*>(bytes.data() + b * bb);
    float amax = 0, extreme = 0;
    for (int i = 0; i < 32; ++i)
      if (std::fabs(x[i]) > amax) {
        amax = std::fabs(x[i]);
        extreme = x[i];
      }
    const float d = f == WeightFormat::kQ8_0 ? amax / 127 : -extreme / 8;
    const uint16_t dh = float_to_fp16(d);
    std::memcpy(out, &dh, 2);
    const float id = d != 0 ? 1 / fp16_to_float(dh) : 0;
    for (int i = 0; i < 32; ++i) {
      if (f == WeightFormat::kQ8_0) {
        out[2 + i] = uint8_t(int8_t(std::clamp<int>(int(std::lround(x[i] * id)), -127, 127)));
      } else {
        const int q = std::clamp<int>(int(std::lround(x[i] * id)) + 8, 0, 15);
        out[2 + i % 16] = uint8_t(i < 16 ? q : (out[2 + i % 16] | (q << 4)));
      }
    }
  }
  std::vector<float> decoded(n);
  dequantize_blocks(f == WeightFormat::kQ8_0 ? GgmlType::kQ8_0 : GgmlType::kQ4_0, bytes, 0, n / 32,
                    decoded.data());
  t.format = f;
  t.blocks = std::move(bytes);
  t.data.clear();
  return decoded;
}

// Block weights for the model and the same weights decoded to fp32 for the reference path.
void quantize_model(ModelWeights& blocks, ModelWeights& decoded, WeightFormat f) {
  auto both = [&](HostTensor& b, HostTensor& d) {
    if (b.empty()) return;
    d.data = quantize(b, f);
  };
  both(blocks.embed_tokens, decoded.embed_tokens);
  both(blocks.lm_head, decoded.lm_head);
  for (size_t l = 0; l < blocks.layers.size(); ++l) {
    LayerWeights& b = blocks.layers[l];
    LayerWeights& d = decoded.layers[l];
    for (auto [bt, dt] : {std::pair{&b.q_proj, &d.q_proj},
                          {&b.k_proj, &d.k_proj},
                          {&b.v_proj, &d.v_proj},
                          {&b.o_proj, &d.o_proj},
                          {&b.gate_proj, &d.gate_proj},
                          {&b.up_proj, &d.up_proj},
                          {&b.down_proj, &d.down_proj}})
      both(*bt, *dt);
  }
}

struct Case {
  WeightFormat format;
  double bound_vs_fp32_path;
  double bound_vs_transformers;  // 0: not compared
};

class HfLogitsBlocks : public ::testing::TestWithParam<std::string> {};

TEST_P(HfLogitsBlocks, BlockKernelsMatchTheFp32PathAndTransformers) {
  const Case cases[] = {{WeightFormat::kQ8_0, 6e-2, 1e-1}, {WeightFormat::kQ4_0, 6e-2, 0}};
  for (const Case& c : cases) {
    testing::HfFixture f = testing::load_hf_fixture(GetParam());
    ModelWeights decoded = f.weights;
    quantize_model(f.weights, decoded, c.format);
    CpuBackend reference(CpuBackendOptions{.num_threads = 1, .block_weights = false});
    LlamaModel ref_model(f.config, decoded, reference, f.config.max_position_embeddings);
    // Whole prompt (prefill rows), and a relay prefix with the rest token by token (decode).
    const std::pair<int32_t, int32_t> variants[] = {{0, 0}, {7, 1}};
    std::vector<std::vector<std::vector<std::vector<float>>>> want(f.inputs.size());
    for (size_t s = 0; s < f.inputs.size(); ++s)
      for (auto [prefix, chunk] : variants)
        want[s].push_back(run_paged(ref_model, f.inputs[s], prefix,
                                    chunk > 0 ? chunk : int32_t(f.inputs[s].size())));
    // Both KV caches: fp32, and fp16 as the serving layer sets it up (cpu_kv_half_test bounds
    // the fp16 rounding alone at 5e-3, well inside these bounds).
    for (const cpu_quant::QuantKernels* table : cpu_quant::usable_quant_kernels())
      for (DType kv : {DType::kF32, DType::kF16}) {
        CpuBackend backend(
            CpuBackendOptions{.num_threads = 2, .kernels = table->isa, .kv_dtype = kv});
        LlamaModel model(f.config, f.weights, backend, f.config.max_position_embeddings);
        double worst_path = 0, worst_hf = 0;
        for (size_t s = 0; s < f.inputs.size(); ++s) {
          const auto& tokens = f.inputs[s];
          const int32_t n = int32_t(tokens.size());
          for (size_t v = 0; v < std::size(variants); ++v) {
            const auto [prefix, chunk0] = variants[v];
            const int32_t chunk = chunk0 > 0 ? chunk0 : n;
            auto rows = run_paged(model, tokens, prefix, chunk);
            for (size_t r = 0; r < rows.size(); ++r) {
              const double e = relative_error(rows[r], want[s][v][r]);
              worst_path = std::max(worst_path, e);
              EXPECT_LT(e, c.bound_vs_fp32_path)
                  << GetParam() << " " << weight_format_name(c.format) << " " << table->isa
                  << " sequence " << s << " prefix " << prefix << " chunk " << chunk << " row "
                  << r;
              if (c.bound_vs_transformers > 0) {
                const double h = relative_error(rows[r], f.logits[s][prefix + r]);
                worst_hf = std::max(worst_hf, h);
                EXPECT_LT(h, c.bound_vs_transformers) << GetParam() << " vs transformers";
              }
            }
          }
        }
        std::printf(
            "%s %s %s, %s KV: worst relative error %.2e vs the fp32 path, %.2e vs transformers\n",
            GetParam().c_str(), weight_format_name(c.format).c_str(), table->isa,
            dtype_name(kv).c_str(), worst_path, worst_hf);
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfLogitsBlocks,
                         ::testing::Values("llama2", "llama3", "mistral", "qwen2", "qwen3"));

}  // namespace
}  // namespace relayllm
