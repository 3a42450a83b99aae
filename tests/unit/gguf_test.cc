// GGUF loading: files written here byte by byte, dequantization checked against a
// reference written from the format's description (element by element, independent of
// the production block loops), both tokenizer kinds, v2/v3 headers and corrupt files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../common/temp_dir.h"
#include "relayllm/common/error.h"
#include "relayllm/common/half.h"
#include "relayllm/formats/gguf_dequant.h"
#include "relayllm/formats/gguf_file.h"
#include "relayllm/model/model_loader.h"
#include "relayllm/tokenizer/byte_level.h"
#include "relayllm/tokenizer/gguf_tokenizer.h"

namespace relayllm {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- writer

class Bytes {
 public:
  template <typename T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    data.insert(data.end(), p, p + sizeof(T));
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    data.insert(data.end(), s.begin(), s.end());
  }
  std::vector<uint8_t> data;
};

struct Tensor {
  std::string name;
  std::vector<uint64_t> dims;  // GGUF order
  uint32_t type;
  std::vector<uint8_t> bytes;
  std::optional<uint64_t> offset;  // the data offset to declare, when not the one written
};

class GgufWriter {
 public:
  void u32(const std::string& k, uint32_t v) { key(k, 4).put(v); }
  void u64(const std::string& k, uint64_t v) { key(k, 10).put(v); }
  void f32(const std::string& k, float v) { key(k, 6).put(v); }
  void boolean(const std::string& k, bool v) { key(k, 7).put<uint8_t>(v); }
  void str(const std::string& k, const std::string& v) { key(k, 8).str(v); }
  void strings(const std::string& k, const std::vector<std::string>& v) {
    Bytes& b = key(k, 9);
    b.put<uint32_t>(8);
    b.put<uint64_t>(v.size());
    for (const auto& s : v) b.str(s);
  }
  void floats(const std::string& k, const std::vector<float>& v) {
    Bytes& b = key(k, 9);
    b.put<uint32_t>(6);
    b.put<uint64_t>(v.size());
    for (float f : v) b.put(f);
  }
  void ints(const std::string& k, const std::vector<int32_t>& v) {
    Bytes& b = key(k, 9);
    b.put<uint32_t>(5);
    b.put<uint64_t>(v.size());
    for (int32_t x : v) b.put(x);
  }
  void tensor(Tensor t) { tensors.push_back(std::move(t)); }
  void erase(const std::string& k) {
    std::erase_if(kv, [&](auto& e) { return e.first == k; });
  }

  std::vector<uint8_t> build(uint32_t version = 3, uint64_t alignment = 32) const {
    Bytes out;
    out.put<uint32_t>(0x46554747);
    out.put<uint32_t>(version);
    out.put<uint64_t>(tensors.size());
    out.put<uint64_t>(kv.size() + (alignment != 32));
    for (const auto& [k, b] : kv) {
      out.str(k);
      out.data.insert(out.data.end(), b.data.begin(), b.data.end());
    }
    if (alignment != 32) {
      out.str("general.alignment");
      out.put<uint32_t>(4);
      out.put<uint32_t>(uint32_t(alignment));
    }
    uint64_t offset = 0;
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors) {
      out.str(t.name);
      out.put<uint32_t>(uint32_t(t.dims.size()));
      for (uint64_t d : t.dims) out.put(d);
      out.put(t.type);
      out.put(t.offset.value_or(offset));
      offsets.push_back(offset);
      offset = (offset + t.bytes.size() + alignment - 1) / alignment * alignment;
    }
    out.data.resize((out.data.size() + alignment - 1) / alignment * alignment);
    const size_t start = out.data.size();
    for (size_t i = 0; i < tensors.size(); ++i) {
      out.data.resize(start + offsets[i]);
      out.data.insert(out.data.end(), tensors[i].bytes.begin(), tensors[i].bytes.end());
    }
    return out.data;
  }

  std::vector<std::pair<std::string, Bytes>> kv;
  std::vector<Tensor> tensors;

 private:
  Bytes& key(const std::string& k, uint32_t type) {
    erase(k);
    kv.emplace_back(k, Bytes{});
    kv.back().second.put(type);
    return kv.back().second;
  }
};

// This file's scratch directories (relayllm_gguf_<suite>_<test>_<n>).
struct TempDir : testing::TempDir {
  TempDir() : testing::TempDir("relayllm_gguf") {}
};

using testing::error_of;

// ---------------------------------------------------------------- reference dequantization
// Straight from the block descriptions: each value computed from its index alone.

constexpr uint32_t kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ8_0 = 8, kQ4_K = 12,
                   kQ5_K = 13, kQ6_K = 14, kBF16 = 30;

struct TypeSpec {
  uint32_t type;
  const char* name;
  int block_values, block_bytes;
};
const TypeSpec kSpecs[] = {
    {kF32, "F32", 1, 4},       {kF16, "F16", 1, 2},       {kBF16, "BF16", 1, 2},
    {kQ8_0, "Q8_0", 32, 34},   {kQ4_0, "Q4_0", 32, 18},   {kQ4_1, "Q4_1", 32, 20},
    {kQ4_K, "Q4_K", 256, 144}, {kQ5_K, "Q5_K", 256, 176}, {kQ6_K, "Q6_K", 256, 210},
};

float half_at(const uint8_t* p) { return fp16_to_float(uint16_t(p[0] | p[1] << 8)); }
int nibble(uint8_t byte, bool high) { return high ? byte >> 4 : byte & 15; }

// 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block's 12 packed bytes.
void packed_scale_min(const uint8_t* s, int j, int& scale, int& min) {
  if (j < 4) {
    scale = s[j] % 64;
    min = s[j + 4] % 64;
  } else {
    scale = (s[j + 4] % 16) + 16 * (s[j - 4] / 64);
    min = (s[j + 4] / 16) + 16 * (s[j] / 64);
  }
}

double reference_value(uint32_t type, const uint8_t* block, int e) {
  switch (type) {
    case kF32: {
      float f;
      std::memcpy(&f, block, 4);
      return f;
    }
    case kF16:
      return half_at(block);
    case kBF16:
      return bf16_to_float(uint16_t(block[0] | block[1] << 8));
    case kQ8_0:
      return double(half_at(block)) * int8_t(block[2 + e]);
    case kQ4_0:
      return double(half_at(block)) * (nibble(block[2 + e % 16], e >= 16) - 8);
    case kQ4_1:
      return double(half_at(block)) * nibble(block[4 + e % 16], e >= 16) + half_at(block + 2);
    case kQ4_K:
    case kQ5_K: {
      const int sub = e / 32, chunk = e / 64, l = e % 32;
      int scale, min;
      packed_scale_min(block + 4, sub, scale, min);
      const uint8_t* qs = block + (type == kQ4_K ? 16 : 48);
      int q = nibble(qs[chunk * 32 + l], sub % 2 == 1);
      if (type == kQ5_K) q += 16 * ((block[16 + l] >> sub) & 1);
      return double(half_at(block)) * scale * q - double(half_at(block + 2)) * min;
    }
    case kQ6_K: {
      const int half = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
      const uint8_t* ql = block;
      const uint8_t* qh = block + 128;
      const auto* scales = reinterpret_cast<const int8_t*>(block + 192);
      int low = nibble(ql[half * 64 + l + (quarter % 2) * 32], quarter >= 2);
      int high = (qh[half * 32 + l] >> (2 * quarter)) & 3;
      return double(half_at(block + 208)) * scales[half * 8 + r / 16] * (low + 16 * high - 32);
    }
  }
  ADD_FAILURE() << "no reference for type " << type;
  return 0;
}

void put_half(uint8_t* p, float v) {
  uint16_t h = float_to_fp16(v);
  p[0] = uint8_t(h);
  p[1] = uint8_t(h >> 8);
}

// Random bytes for `blocks` blocks, with the fp16 scale fields set to sane values (random
// bits would be NaN or huge now and then).
std::vector<uint8_t> random_blocks(const TypeSpec& spec, int blocks, std::mt19937& rng) {
  std::vector<uint8_t> bytes(size_t(blocks) * spec.block_bytes);
  for (auto& b : bytes) b = uint8_t(rng());
  std::uniform_real_distribution<float> u(-1, 1);
  for (int k = 0; k < blocks; ++k) {
    uint8_t* b = bytes.data() + size_t(k) * spec.block_bytes;
    switch (spec.type) {
      case kF32: {
        float f = u(rng);
        std::memcpy(b, &f, 4);
        break;
      }
      case kF16:
        put_half(b, u(rng));
        break;
      case kBF16: {
        uint16_t h = float_to_bf16(u(rng));
        b[0] = uint8_t(h);
        b[1] = uint8_t(h >> 8);
        break;
      }
      case kQ8_0:
      case kQ4_0:
        put_half(b, 0.01f * u(rng));
        break;
      case kQ4_1:
        put_half(b, 0.01f * u(rng));
        put_half(b + 2, 0.1f * u(rng));
        break;
      case kQ4_K:
      case kQ5_K:
        put_half(b, 0.001f * u(rng));
        put_half(b + 2, 0.001f * u(rng));
        break;
      case kQ6_K:
        put_half(b + 208, 0.001f * u(rng));
        break;
    }
  }
  return bytes;
}

TEST(GgufDequant, EveryTypeMatchesTheReference) {
  std::mt19937 rng(7);
  TempDir dir;
  GgufWriter w;
  const int rows = 3, cols = 512;
  std::vector<std::vector<uint8_t>> raw;
  for (const TypeSpec& spec : kSpecs) {
    raw.push_back(random_blocks(spec, rows * cols / spec.block_values, rng));
    w.tensor({spec.name, {uint64_t(cols), uint64_t(rows)}, spec.type, raw.back()});
  }
  GgufFile file(dir.write("types.gguf", w.build()));
  for (size_t k = 0; k < std::size(kSpecs); ++k) {
    const TypeSpec& spec = kSpecs[k];
    SCOPED_TRACE(spec.name);
    const GgufTensorInfo* t = file.find_tensor(spec.name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->shape(), (std::vector<int64_t>{rows, cols}));
    ASSERT_TRUE(gguf_can_dequantize(t->type));
    const size_t blocks = size_t(rows * cols / spec.block_values);
    std::vector<float> got(size_t(rows * cols), NAN);
    // Two calls, to cover a first_block other than zero.
    dequantize_blocks(t->type, t->bytes, 0, blocks / 2, got.data());
    dequantize_blocks(t->type, t->bytes, blocks / 2, blocks - blocks / 2,
                      got.data() + blocks / 2 * size_t(spec.block_values));
    double max_abs = 0;
    int mismatches = 0;
    for (int i = 0; i < rows * cols; ++i) {
      const uint8_t* block = raw[k].data() + size_t(i / spec.block_values) * spec.block_bytes;
      double want = reference_value(spec.type, block, i % spec.block_values);
      max_abs = std::max(max_abs, std::fabs(want));
      if (!(std::fabs(got[size_t(i)] - want) <= 1e-6 * std::max(1.0, std::fabs(want)))) {
        if (++mismatches < 5)
          ADD_FAILURE() << "value " << i << ": " << got[size_t(i)] << " vs " << want;
      }
    }
    EXPECT_EQ(mismatches, 0);
    EXPECT_GT(max_abs, 0.0);  // the data is not all zeros
  }
}

// ---------------------------------------------------------------- a tiny model

constexpr int kHidden = 32, kHeads = 4, kKvHeads = 2, kHeadDim = 8, kInter = 64, kLayers = 2;

// Byte-level vocab: 256 byte tokens, a few merges, control tokens.
struct Vocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;
};

Vocab gpt2_vocab() {
  Vocab v;
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(byte_level::byte_to_char(uint8_t(b)));
    v.types.push_back(1);
  }
  const std::string g = byte_level::byte_to_char(' ');  // "Ġ"
  for (auto [l, r] : std::vector<std::pair<std::string, std::string>>{
           {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {g, "hello"}, {"1", "2"}}) {
    v.merges.push_back(l + " " + r);
    v.tokens.push_back(l + r);  // ids 256..261
    v.types.push_back(1);
  }
  for (const char* s : {"<|im_start|>", "<|im_end|>"}) {  // 262, 263
    v.tokens.push_back(s);
    v.types.push_back(3);
  }
  return v;
}

std::vector<float> random_values(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}
std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}
std::vector<uint8_t> f16_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) put_half(b.data() + 2 * i, v[i]);
  return b;
}

// llama.cpp's order for q/k rows of one head: rope pairs (r, r + head_dim/2) adjacent.
std::vector<float> permute_rows(const std::vector<float>& hf, int heads, int cols) {
  std::vector<float> out(hf.size());
  for (int h = 0; h < heads; ++h)
    for (int r = 0; r < kHeadDim / 2; ++r)
      for (int i = 0; i < 2; ++i)
        std::memcpy(&out[size_t((h * kHeadDim + 2 * r + i) * cols)],
                    &hf[size_t((h * kHeadDim + i * kHeadDim / 2 + r) * cols)], size_t(cols) * 4);
  return out;
}

struct TinyModel {
  GgufWriter writer;
  std::vector<float> q0_hf, k0_hf, embed;  // expected after loading
};

TinyModel tiny_model(bool tied) {
  TinyModel m;
  GgufWriter& w = m.writer;
  Vocab v = gpt2_vocab();
  const int vocab = int(v.tokens.size());
  w.str("general.architecture", "llama");
  w.u32("llama.block_count", kLayers);
  w.u32("llama.context_length", 256);
  w.u32("llama.embedding_length", kHidden);
  w.u32("llama.feed_forward_length", kInter);
  w.u32("llama.attention.head_count", kHeads);
  w.u32("llama.attention.head_count_kv", kKvHeads);
  w.u32("llama.rope.dimension_count", kHeadDim);
  w.f32("llama.rope.freq_base", 50000.0f);
  w.f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.str("tokenizer.ggml.model", "gpt2");
  w.str("tokenizer.ggml.pre", "smollm");
  w.strings("tokenizer.ggml.tokens", v.tokens);
  w.ints("tokenizer.ggml.token_type", v.types);
  w.strings("tokenizer.ggml.merges", v.merges);
  w.u32("tokenizer.ggml.bos_token_id", 262);
  w.u32("tokenizer.ggml.eos_token_id", 263);
  w.boolean("tokenizer.ggml.add_bos_token", false);
  w.str("tokenizer.chat_template", "{{ messages }}<|im_start|>");

  std::mt19937 rng(3);
  auto f32 = [&](const std::string& name, std::vector<uint64_t> dims, std::vector<float> values) {
    w.tensor({name, std::move(dims), kF32, f32_bytes(values)});
  };
  auto quant = [&](const std::string& name, std::vector<uint64_t> dims, const TypeSpec& spec) {
    w.tensor({name, dims, spec.type,
              random_blocks(spec, int(dims[0] * dims[1]) / spec.block_values, rng)});
  };
  m.embed = random_values(size_t(vocab * kHidden), rng);
  w.tensor({"token_embd.weight", {kHidden, uint64_t(vocab)}, kF16, f16_bytes(m.embed)});
  for (float& x : m.embed) x = fp16_to_float(float_to_fp16(x));
  f32("output_norm.weight", {kHidden}, random_values(kHidden, rng));
  if (!tied) quant("output.weight", {kHidden, uint64_t(vocab)}, kSpecs[3]);
  for (int l = 0; l < kLayers; ++l) {
    auto name = [&](const char* s) { return fmt::format("blk.{}.{}", l, s); };
    std::vector<float> q = random_values(kHeads * kHeadDim * kHidden, rng);
    std::vector<float> k = random_values(kKvHeads * kHeadDim * kHidden, rng);
    if (l == 0) {
      m.q0_hf = q;
      m.k0_hf = k;
    }
    f32(name("attn_q.weight"), {kHidden, kHeads * kHeadDim}, permute_rows(q, kHeads, kHidden));
    f32(name("attn_k.weight"), {kHidden, kKvHeads * kHeadDim}, permute_rows(k, kKvHeads, kHidden));
    f32(name("attn_norm.weight"), {kHidden}, random_values(kHidden, rng));
    f32(name("ffn_norm.weight"), {kHidden}, random_values(kHidden, rng));
    quant(name("attn_v.weight"), {kHidden, kKvHeads * kHeadDim}, kSpecs[4]);
    quant(name("attn_output.weight"), {kHidden, kHidden}, kSpecs[5]);
    // The model's rows are narrower than a K-quant block: K-quants are covered above.
    quant(name("ffn_gate.weight"), {kHidden, kInter}, kSpecs[3]);
    quant(name("ffn_up.weight"), {kHidden, kInter}, kSpecs[3]);
    w.tensor({name("ffn_down.weight"),
              {kInter, kHidden},
              kBF16,
              random_blocks(kSpecs[2], kHidden * kInter, rng)});
  }
  return m;
}

TEST(GgufModel, LoadsConfigWeightsAndTokenizerForV2AndV3) {
  for (uint32_t version : {2u, 3u}) {
    for (bool tied : {true, false}) {
      SCOPED_TRACE(fmt::format("v{} tied={}", version, tied));
      TempDir dir;
      TinyModel m = tiny_model(tied);
      fs::path path = dir.write("tiny.gguf", m.writer.build(version, version == 2 ? 64 : 32));
      LoadedModel loaded = load_model(path, LoadFormat::kAuto, 0);
      const ModelConfig& c = loaded.config;
      EXPECT_EQ(c.architecture, "LlamaForCausalLM");
      EXPECT_EQ(c.num_layers, kLayers);
      EXPECT_EQ(c.hidden_size, kHidden);
      EXPECT_EQ(c.intermediate_size, kInter);
      EXPECT_EQ(c.num_heads, kHeads);
      EXPECT_EQ(c.num_kv_heads, kKvHeads);
      EXPECT_EQ(c.head_dim, kHeadDim);
      EXPECT_EQ(c.vocab_size, 264);
      EXPECT_EQ(c.max_position_embeddings, 256);
      EXPECT_DOUBLE_EQ(c.rope.theta, 50000.0);
      EXPECT_NEAR(c.rms_norm_eps, 1e-5, 1e-12);
      EXPECT_EQ(c.tie_word_embeddings, tied);
      EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{263});
      EXPECT_EQ(loaded.weights.embed_tokens.data, m.embed);
      EXPECT_EQ(loaded.weights.layers[0].q_proj.data, m.q0_hf);  // un-permuted
      EXPECT_EQ(loaded.weights.layers[0].k_proj.data, m.k0_hf);
      EXPECT_EQ(loaded.weights.layers[1].down_proj.shape, (std::vector<int64_t>{kHidden, kInter}));
      EXPECT_EQ(loaded.weights.lm_head.empty(), tied);
      EXPECT_EQ(loaded.tokenizer.chat_template(), "{{ messages }}<|im_start|>");
      EXPECT_EQ(loaded.tokenizer.eos_token_id(), 263);
    }
  }
}

// ---------------------------------------------------------------- tokenizers

TEST(GgufTokenizer, Gpt2ByteLevelWithMergesAndPreTokenizer) {
  TempDir dir;
  TinyModel m = tiny_model(true);
  Tokenizer smollm = load_gguf_tokenizer(GgufFile(dir.write("a.gguf", m.writer.build())));
  // Digits are split one by one ("smollm"), so the merge "1 2" never applies.
  EXPECT_EQ(smollm.encode("<|im_start|>hello hello 12<|im_end|>", true),
            (std::vector<int32_t>{262, 259, 260, ' ', '1', '2', 263}));
  EXPECT_EQ(smollm.decode(smollm.encode("hello hello 12!", false), false), "hello hello 12!");
  EXPECT_EQ(smollm.decode(std::vector<int32_t>{262, 259, 263}, true), "hello");
  EXPECT_EQ(smollm.bos_token_id(), 262);
  EXPECT_TRUE(smollm.is_special(263));

  m.writer.str("tokenizer.ggml.pre", "default");  // the plain gpt2 split keeps "12" whole
  m.writer.boolean("tokenizer.ggml.add_bos_token", true);
  Tokenizer gpt2 = load_gguf_tokenizer(GgufFile(dir.write("b.gguf", m.writer.build())));
  EXPECT_EQ(gpt2.encode("hello 12", true), (std::vector<int32_t>{262, 259, ' ', 261}));

  m.writer.str("tokenizer.ggml.pre", "klingon");
  EXPECT_NE(error_of([&] {
              load_gguf_tokenizer(GgufFile(dir.write("c.gguf", m.writer.build())));
            }).find("tokenizer.ggml.pre = \"klingon\""),
            std::string::npos);
}

TEST(GgufTokenizer, LlamaSentencePieceWithScoresAndByteFallback) {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<int32_t> types = {2, 3, 3};
  std::vector<float> scores = {0, 0, 0};
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(fmt::format("<0x{:02X}>", b));
    types.push_back(6);
    scores.push_back(0);
  }
  const std::string sp = "\xe2\x96\x81";
  // Higher score merges first: ll, he, hell, hello, ▁hello, ▁h.
  std::vector<std::pair<std::string, float>> pieces = {
      {sp, -10},  {"h", -11},   {"e", -12},    {"l", -13},         {"o", -14},    {"ll", -1},
      {"he", -2}, {"hell", -3}, {"hello", -4}, {sp + "hello", -5}, {sp + "h", -6}};
  for (auto& [p, s] : pieces) {
    tokens.push_back(p);
    types.push_back(1);
    scores.push_back(s);
  }
  auto id = [&](const std::string& t) {
    return int32_t(std::find(tokens.begin(), tokens.end(), t) - tokens.begin());
  };
  GgufWriter w;
  w.str("tokenizer.ggml.model", "llama");
  w.strings("tokenizer.ggml.tokens", tokens);
  w.floats("tokenizer.ggml.scores", scores);
  w.ints("tokenizer.ggml.token_type", types);
  w.u32("tokenizer.ggml.bos_token_id", 1);
  w.u32("tokenizer.ggml.eos_token_id", 2);
  w.u32("tokenizer.ggml.unknown_token_id", 0);
  TempDir dir;
  Tokenizer t = load_gguf_tokenizer(GgufFile(dir.write("spm.gguf", w.build(2))));
  EXPECT_EQ(t.encode("hello hello", true),
            (std::vector<int32_t>{1, id(sp + "hello"), id(sp + "hello")}));
  EXPECT_EQ(t.encode("hi!", false), (std::vector<int32_t>{id(sp + "h"), 3 + 'i', 3 + '!'}));
  EXPECT_EQ(t.decode(t.encode("hello hi!", true), true), "hello hi!");
  EXPECT_EQ(t.bos_token_id(), 1);
  EXPECT_EQ(t.eos_token_id(), 2);

  w.erase("tokenizer.ggml.scores");
  EXPECT_NE(error_of([&] {
              load_gguf_tokenizer(GgufFile(dir.write("bad.gguf", w.build())));
            }).find("missing metadata key tokenizer.ggml.scores"),
            std::string::npos);
}

// ---------------------------------------------------------------- bad files

void expect_load_error(const std::vector<uint8_t>& bytes, const std::string& expected) {
  TempDir dir;
  fs::path path = dir.write("bad.gguf", bytes);
  std::string message = error_of([&] { load_model(path, LoadFormat::kAuto, 0); });
  EXPECT_NE(message.find(expected), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(GgufBadFiles, EachGivesOneClearError) {
  TinyModel m = tiny_model(true);
  std::vector<uint8_t> good = m.writer.build();

  std::vector<uint8_t> truncated_header(good.begin(), good.begin() + 200);
  expect_load_error(truncated_header, "file truncated while reading");
  std::vector<uint8_t> truncated_data(good.begin(), good.end() - 100);
  expect_load_error(truncated_data, "lies outside the file");

  std::vector<uint8_t> magic = good;
  magic[0] = 'X';
  expect_load_error(magic, "bad magic");

  std::vector<uint8_t> version = good;
  version[4] = 1;
  expect_load_error(version, "unsupported GGUF version 1");

  GgufWriter unknown = m.writer;
  unknown.tensors[0].type = 99;
  expect_load_error(unknown.build(), "tensor token_embd.weight has unknown ggml type 99");

  GgufWriter undequantizable = m.writer;
  for (Tensor& t : undequantizable.tensors)
    if (t.name == "blk.1.attn_output.weight") {
      t.type = kQ5_0;
      t.bytes.assign(size_t(kHidden * kHidden / 32 * 22), 0);
    }
  expect_load_error(undequantizable.build(), "tensor blk.1.attn_output.weight has type Q5_0");

  // Shift one tensor's data beyond the end of the file by lying about the count of a later one.
  GgufWriter far = m.writer;
  far.tensors.back().dims = {kHidden, 100000};
  expect_load_error(far.build(), "the data of tensor " + far.tensors.back().name);

  GgufWriter missing_key = m.writer;
  missing_key.erase("llama.block_count");
  expect_load_error(missing_key.build(), "missing metadata key llama.block_count");

  GgufWriter wrong_type = m.writer;
  wrong_type.str("llama.embedding_length", "wide");
  expect_load_error(wrong_type.build(), "metadata key llama.embedding_length is a string");

  GgufWriter missing_tensor = m.writer;
  std::erase_if(missing_tensor.tensors,
                [](const Tensor& t) { return t.name == "blk.0.ffn_up.weight"; });
  expect_load_error(missing_tensor.build(), "missing tensor blk.0.ffn_up.weight");

  GgufWriter bad_shape = m.writer;
  for (Tensor& t : bad_shape.tensors)
    if (t.name == "output_norm.weight") t.dims = {kHidden / 2}, t.bytes.resize(kHidden * 2);
  expect_load_error(bad_shape.build(), "tensor output_norm.weight has shape [16]");

  GgufWriter arch = m.writer;
  arch.str("general.architecture", "gpt-neox");
  expect_load_error(arch.build(), "general.architecture = \"gpt-neox\" is unsupported");
}

// ---------------------------------------------------------------- hostile files
// Each field a hostile file can set to an absurd value is refused with one line naming it,
// before anything is allocated.

TEST(GgufHostileFiles, OutOfRangeFieldsAreNamed) {
  TinyModel m = tiny_model(true);
  const std::vector<std::pair<std::function<void(GgufWriter&)>, std::string>> cases = {
      {[](GgufWriter& w) { w.u64("llama.context_length", uint64_t(1) << 62); },
       "llama.context_length = 4611686018427387904 is out of range"},
      {[](GgufWriter& w) { w.u32("llama.context_length", (1u << 24) + 1); },
       "llama.context_length = 16777217 is out of range"},
      {[](GgufWriter& w) { w.u32("llama.block_count", 100000); },
       "llama.block_count = 100000 is out of range"},
      {[](GgufWriter& w) { w.f32("llama.attention.layer_norm_rms_epsilon", INFINITY); },
       "llama.attention.layer_norm_rms_epsilon = inf"},
      {[](GgufWriter& w) { w.f32("llama.attention.layer_norm_rms_epsilon", NAN); },
       "llama.attention.layer_norm_rms_epsilon"},
      {[](GgufWriter& w) { w.f32("llama.rope.freq_base", INFINITY); },
       "llama.rope.freq_base = inf"},
      {[](GgufWriter& w) { w.u64("llama.embedding_length", uint64_t(1) << 40); },
       "llama.embedding_length"},
      {[](GgufWriter& w) { w.u64("tokenizer.ggml.bos_token_id", (uint64_t(1) << 32) + 1); },
       "tokenizer.ggml.bos_token_id = 4294967297"},
      {[](GgufWriter& w) { w.u64("tokenizer.ggml.eos_token_id", uint64_t(1) << 33); },
       "tokenizer.ggml.eos_token_id = 8589934592"},
  };
  for (const auto& [edit, expected] : cases) {
    SCOPED_TRACE(expected);
    GgufWriter w = m.writer;
    edit(w);
    expect_load_error(w.build(), expected);
  }
}

TEST(GgufHostileFiles, HugeLayerCountNamesTheMemoryNeeded) {
  TinyModel m = tiny_model(true);
  GgufWriter w = m.writer;
  w.u32("llama.block_count", 4000);
  w.u32("llama.embedding_length", 8192);
  w.u32("llama.feed_forward_length", 28672);
  w.u32("llama.attention.head_count", 64);
  w.u32("llama.attention.head_count_kv", 8);
  w.u32("llama.rope.dimension_count", 128);
  // The tensors present belong to a different model: the memory check comes first.
  TempDir dir;
  fs::path path = dir.write("huge.gguf", w.build());
  std::string message = error_of([&] { load_model(path, LoadFormat::kAuto, 0); });
  EXPECT_NE(message.find("of memory"), std::string::npos) << message;
  EXPECT_NE(message.find("4000 layers"), std::string::npos) << message;
}

TEST(GgufHostileFiles, OverlappingTensorDataIsRefused) {
  TinyModel m = tiny_model(true);
  GgufWriter w = m.writer;
  w.tensors[1].offset = 0;  // output_norm.weight declared on top of token_embd.weight
  expect_load_error(w.build(), "overlap");
  GgufWriter w2 = m.writer;
  w2.tensors.back().offset = 64;  // inside an earlier tensor, still aligned
  expect_load_error(w2.build(), "overlap");
}

TEST(GgufHostileFiles, LayerCountSmallerThanTheTensors) {
  TinyModel m = tiny_model(true);
  GgufWriter w = m.writer;
  w.u32("llama.block_count", kLayers - 1);
  expect_load_error(w.build(), "tensor blk.1.");
  expect_load_error(w.build(), "llama.block_count = 1");
}

TEST(GgufHostileFiles, TensorShapeProductOverflowIsRefused) {
  TinyModel m = tiny_model(true);
  GgufWriter w = m.writer;
  w.tensors[1].dims = {uint64_t(1) << 40, uint64_t(1) << 40, uint64_t(1) << 40, 1u << 20};
  expect_load_error(w.build(), "more elements than any file can hold");
}

}  // namespace
}  // namespace relayllm
