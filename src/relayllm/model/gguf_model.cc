#include "relayllm/model/gguf_model.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "relayllm/common/error.h"
#include "relayllm/common/thread_pool.h"
#include "relayllm/formats/gguf_dequant.h"
#include "relayllm/model/model_limits.h"
#include "relayllm/model/tensor_parallel.h"

namespace relayllm {
namespace {

struct ArchInfo {
  const char* hf_name;
  bool qkv_bias, qk_norm;
  bool permuted_qk;  // llama.cpp reorders q/k rows for its interleaved rope
};

ArchInfo arch_info(const std::string& arch, const std::string& source) {
  if (arch == "llama" || arch == "mistral") return {"LlamaForCausalLM", false, false, true};
  if (arch == "qwen2") return {"Qwen2ForCausalLM", true, false, false};
  if (arch == "qwen3") return {"Qwen3ForCausalLM", false, true, false};
  fail(
      "{}: metadata key general.architecture = \"{}\" is unsupported (supported: llama, "
      "mistral, qwen2, qwen3)",
      source, arch);
}

int64_t positive(const GgufFile& file, const std::string& key, uint64_t value) {
  if (value == 0 || value > (uint64_t(1) << 31))
    fail("{}: metadata key {} = {} is out of range", file.source(), key, value);
  return int64_t(value);
}

// Rows of one head come as [r0a, r0b, r1a, r1b, ...] (rope pairs adjacent); HF wants
// [r0a, r1a, ..., r0b, r1b, ...] (first halves, then second halves). Rows move whole, so
// block-format rows (whole blocks each) move the same way as fp32 rows.
template <typename T>
void unpermute_rows(std::vector<T>& data, int64_t rows, int64_t num_heads) {
  const int64_t row_size = int64_t(data.size()) / rows;
  const int64_t head_dim = rows / num_heads, half = head_dim / 2;
  std::vector<T> out(data.size());
  for (int64_t h = 0; h < num_heads; ++h)
    for (int64_t r = 0; r < half; ++r)
      for (int64_t i = 0; i < 2; ++i) {
        const T* src = data.data() + (h * head_dim + 2 * r + i) * row_size;
        std::copy(src, src + row_size, out.data() + (h * head_dim + i * half + r) * row_size);
      }
  data = std::move(out);
}

void unpermute_rows(HostTensor& t, int64_t num_heads) {
  if (t.format == WeightFormat::kNone)
    unpermute_rows(t.data, t.shape[0], num_heads);
  else
    unpermute_rows(t.blocks, t.shape[0], num_heads);
}

}  // namespace

WeightFormat gguf_weight_format(GgmlType type) {
  switch (type) {
    case GgmlType::kF16:
      return WeightFormat::kF16;
    case GgmlType::kBF16:
      return WeightFormat::kBF16;
    case GgmlType::kQ8_0:
      return WeightFormat::kQ8_0;
    case GgmlType::kQ4_0:
      return WeightFormat::kQ4_0;
    case GgmlType::kQ4_1:
      return WeightFormat::kQ4_1;
    case GgmlType::kQ4_K:
      return WeightFormat::kQ4_K;
    case GgmlType::kQ5_K:
      return WeightFormat::kQ5_K;
    case GgmlType::kQ6_K:
      return WeightFormat::kQ6_K;
    default:
      return WeightFormat::kNone;
  }
}

std::string gguf_tensor_name(const std::string& hf) {
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  static const std::string kLayers = "model.layers.";
  if (hf.rfind(kLayers, 0) == 0) {
    size_t dot = hf.find('.', kLayers.size());
    if (dot != std::string::npos) {
      std::string layer = hf.substr(kLayers.size(), dot - kLayers.size());
      std::string rest = hf.substr(dot + 1);
      static const std::pair<const char*, const char*> kMap[] = {
          {"input_layernorm.weight", "attn_norm.weight"},
          {"self_attn.q_proj.weight", "attn_q.weight"},
          {"self_attn.k_proj.weight", "attn_k.weight"},
          {"self_attn.v_proj.weight", "attn_v.weight"},
          {"self_attn.o_proj.weight", "attn_output.weight"},
          {"self_attn.q_proj.bias", "attn_q.bias"},
          {"self_attn.k_proj.bias", "attn_k.bias"},
          {"self_attn.v_proj.bias", "attn_v.bias"},
          {"self_attn.q_norm.weight", "attn_q_norm.weight"},
          {"self_attn.k_norm.weight", "attn_k_norm.weight"},
          {"post_attention_layernorm.weight", "ffn_norm.weight"},
          {"mlp.gate_proj.weight", "ffn_gate.weight"},
          {"mlp.up_proj.weight", "ffn_up.weight"},
          {"mlp.down_proj.weight", "ffn_down.weight"},
      };
      for (const auto& [from, to] : kMap)
        if (rest == from) return "blk." + layer + "." + to;
    }
  }
  fail("tensor {} has no GGUF counterpart", hf);
}

ModelConfig gguf_model_config(const GgufFile& file) {
  const std::string src = file.source();
  const std::string arch = file.require_string("general.architecture");
  const ArchInfo info = arch_info(arch, src);
  auto key = [&](const char* suffix) { return arch + "." + suffix; };
  auto require = [&](const char* suffix) {
    std::string k = key(suffix);
    return positive(file, k, file.require_uint(k));
  };

  ModelConfig c;
  c.architecture = info.hf_name;
  c.qkv_bias = info.qkv_bias;
  c.qk_norm = info.qk_norm;
  c.num_layers = require("block_count");
  c.hidden_size = require("embedding_length");
  c.intermediate_size = require("feed_forward_length");
  c.num_heads = require("attention.head_count");
  c.num_kv_heads = c.num_heads;
  if (auto kv = file.get_uint(key("attention.head_count_kv")))
    c.num_kv_heads = positive(file, key("attention.head_count_kv"), *kv);
  if (c.num_heads % c.num_kv_heads != 0)
    fail("{}: metadata key {} = {} does not divide {} = {}", src, key("attention.head_count_kv"),
         c.num_kv_heads, key("attention.head_count"), c.num_heads);
  c.head_dim = c.hidden_size / c.num_heads;
  if (auto kl = file.get_uint(key("attention.key_length")))
    c.head_dim = positive(file, key("attention.key_length"), *kl);
  else if (auto rd = file.get_uint(key("rope.dimension_count")))
    c.head_dim = positive(file, key("rope.dimension_count"), *rd);
  if (auto rd = file.get_uint(key("rope.dimension_count")); rd && int64_t(*rd) != c.head_dim)
    fail("{}: metadata key {} = {} differs from the head size {} (partial rope is unsupported)",
         src, key("rope.dimension_count"), *rd, c.head_dim);
  if (c.head_dim % 2 != 0) fail("{}: odd head size {}", src, c.head_dim);
  c.rms_norm_eps = file.require_float(key("attention.layer_norm_rms_epsilon"));
  if (!(c.rms_norm_eps > 0))
    fail("{}: metadata key {} = {} must be > 0", src, key("attention.layer_norm_rms_epsilon"),
         c.rms_norm_eps);
  c.max_position_embeddings = require("context_length");
  if (auto theta = file.get_float(key("rope.freq_base"))) c.rope.theta = *theta;
  if (!(c.rope.theta > 1))
    fail("{}: metadata key {} = {} must be > 1", src, key("rope.freq_base"), c.rope.theta);
  std::string scaling = file.get_string(key("rope.scaling.type")).value_or("none");
  if (scaling == "linear") {
    c.rope.type = RopeType::kLinear;
    c.rope.factor = file.require_float(key("rope.scaling.factor"));
    if (!(c.rope.factor >= 1))
      fail("{}: metadata key {} = {} must be >= 1", src, key("rope.scaling.factor"), c.rope.factor);
  } else if (scaling != "none") {
    fail("{}: metadata key {} = \"{}\" is unsupported (supported: none, linear)", src,
         key("rope.scaling.type"), scaling);
  }
  if (file.find_tensor("rope_freqs.weight"))
    fail(
        "{}: tensor rope_freqs.weight (per-frequency rope factors, as in Llama 3.1) is "
        "unsupported",
        src);
  if (auto window = file.get_uint(key("attention.sliding_window")); window && *window > 0) {
    if (*window > uint64_t(kMaxPositions))
      fail("{}: metadata key {} = {} is out of range", src, key("attention.sliding_window"),
           *window);
    c.sliding_window = int64_t(*window);
  }

  if (auto v = file.get_uint(key("vocab_size"))) {
    c.vocab_size = positive(file, key("vocab_size"), *v);
  } else if (const auto* tokens = file.get_array("tokenizer.ggml.tokens", GgufValueType::kString)) {
    c.vocab_size = int64_t(tokens->size());
    if (c.vocab_size == 0) fail("{}: metadata key tokenizer.ggml.tokens is empty", src);
  } else if (const GgufTensorInfo* embd = file.find_tensor("token_embd.weight");
             embd && embd->dims.size() == 2) {
    c.vocab_size = embd->dims[1];
  } else {
    fail("{}: missing metadata key {} (and no tokenizer.ggml.tokens)", src, key("vocab_size"));
  }
  c.tie_word_embeddings = file.find_tensor("output.weight") == nullptr;
  c.torch_dtype = "float32";  // weights are dequantized to fp32 at load
  // Token ids are refused, not truncated, when they are not ids of this vocabulary.
  auto token_id = [&](const char* k) -> std::optional<int32_t> {
    std::optional<uint64_t> id = file.get_uint(k);
    if (id && *id >= uint64_t(c.vocab_size))
      fail("{}: metadata key {} = {} is not a token id (vocab size {})", src, k, *id, c.vocab_size);
    return id ? std::optional<int32_t>(int32_t(*id)) : std::nullopt;
  };
  ConfigFieldNames names;
  names.vocab_size = key("vocab_size");
  names.hidden_size = key("embedding_length");
  names.intermediate_size = key("feed_forward_length");
  names.num_layers = key("block_count");
  names.num_heads = key("attention.head_count");
  names.num_kv_heads = key("attention.head_count_kv");
  names.head_dim = key("attention.key_length");
  names.max_position_embeddings = key("context_length");
  names.rms_norm_eps = key("attention.layer_norm_rms_epsilon");
  names.rope_theta = key("rope.freq_base");
  names.rope_factor = key("rope.scaling.factor");
  names.sliding_window = key("attention.sliding_window");
  validate_model_config(c, src, names);
  c.bos_token_id = token_id("tokenizer.ggml.bos_token_id");
  for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                        "tokenizer.ggml.eom_token_id"})
    if (auto id = token_id(k))
      if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), *id) == c.eos_token_ids.end())
        c.eos_token_ids.push_back(*id);
  std::vector<std::string> tensor_names;
  for (const GgufTensorInfo& t : file.tensors()) tensor_names.push_back(t.name);
  check_layer_tensors(tensor_names, "blk.", c.num_layers, src, names.num_layers);
  return c;
}

ModelWeights load_gguf_weights(const GgufFile& file, const ModelConfig& config, ThreadPool* pool,
                               const WeightFormatFilter& keep, const ShardLayout* shard) {
  const auto start = std::chrono::steady_clock::now();
  const std::string src = file.source();
  ModelWeights weights;
  std::vector<WeightSlot> slots = weight_slots(weights, config);
  std::vector<const GgufTensorInfo*> infos;
  size_t file_bytes = 0, elements = 0, kept_bytes = 0, kept_tensors = 0;
  for (const WeightSlot& slot : slots) {
    const std::string name = gguf_tensor_name(slot.name);
    const GgufTensorInfo* t = file.find_tensor(name);
    if (!t) fail("{}: missing tensor {}", src, name);
    if (t->shape() != slot.shape)
      fail("{}: tensor {} has shape [{}] (GGUF dims [{}]), expected [{}]", src, name,
           fmt::join(t->shape(), ", "), fmt::join(t->dims, ", "), fmt::join(slot.shape, ", "));
    if (!gguf_can_dequantize(t->type))
      fail(
          "{}: tensor {} has type {}, which cannot be dequantized (supported: F32, F16, BF16, "
          "Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)",
          src, name, ggml_type_name(t->type));
    infos.push_back(t);
    file_bytes += t->bytes.size();
    elements += size_t(t->numel());
  }

  std::optional<ThreadPool> own;
  if (!pool) own.emplace(elements > (size_t(1) << 20) ? 0 : 1);
  ThreadPool& workers = pool ? *pool : *own;
  const bool permuted = config.architecture == "LlamaForCausalLM";  // llama and mistral files
  for (size_t k = 0; k < slots.size(); ++k) {
    const GgufTensorInfo& t = *infos[k];
    HostTensor& out = *slots[k].tensor;
    const WeightSlice slice = shard ? weight_slice(slots[k], *shard) : WeightSlice{};
    out.shape = sliced_shape(slots[k].shape, slice);
    const WeightFormat format = gguf_weight_format(t.type);
    const bool matrix =
        slots[k].kind == WeightKind::kLinear || slots[k].kind == WeightKind::kEmbedding;
    const bool aligned = slice_keeps_blocks(slice, format);
    if (matrix && format != WeightFormat::kNone && keep && keep(format) && !aligned)
      spdlog::info(
          "{}: tensor {} ({}): this rank's columns [{}, {}) split its blocks, so its slice is "
          "dequantized to fp32",
          src, t.name, weight_format_name(format), slice.begin, slice.end);
    if (matrix && format != WeightFormat::kNone && keep && keep(format) && aligned) {
      out.format = format;
      // Rows of whole blocks: a row range is one byte range, a block-aligned column range
      // one byte range per row.
      const size_t rows = size_t(slots[k].shape[0]), row_bytes = t.bytes.size() / rows;
      if (slice.axis == SliceAxis::kCols) {
        const size_t per_block = size_t(weight_block_layout(format).block_bytes),
                     elems = size_t(weight_block_layout(format).block_elements);
        const size_t b = size_t(slice.begin) / elems * per_block,
                     e = size_t(slice.end) / elems * per_block;
        out.blocks.resize(rows * (e - b));
        for (size_t r = 0; r < rows; ++r)
          std::copy(t.bytes.begin() + r * row_bytes + b, t.bytes.begin() + r * row_bytes + e,
                    out.blocks.begin() + r * (e - b));
      } else {
        const size_t b = slice.axis == SliceAxis::kRows ? size_t(slice.begin) * row_bytes : 0;
        const size_t e =
            slice.axis == SliceAxis::kRows ? size_t(slice.end) * row_bytes : t.bytes.size();
        out.blocks.assign(t.bytes.begin() + b, t.bytes.begin() + e);
      }
      kept_bytes += out.blocks.size();
      ++kept_tensors;
      continue;
    }
    const GgmlBlockLayout layout = ggml_block_layout(t.type);
    // Blocks never cross rows, so a row range is a block range; a column range is
    // dequantized whole and cut.
    const bool cols = slice.axis == SliceAxis::kCols;
    const int64_t row_elems = t.numel() / slots[k].shape[0];
    const int64_t first_elem = slice.axis == SliceAxis::kRows ? slice.begin * row_elems : 0;
    const int64_t count = cols ? t.numel() : out.numel();
    std::vector<float> values(static_cast<size_t>(count));
    const size_t first_block = size_t(first_elem / layout.block_elements);
    const size_t blocks = size_t(count / layout.block_elements);
    float* dst = values.data();
    workers.parallel_for(
        blocks,
        [&](size_t begin, size_t end) {
          dequantize_blocks(t.type, t.bytes, first_block + begin, end - begin,
                            dst + begin * size_t(layout.block_elements));
        },
        4096);
    if (cols) {
      HostTensor full;
      full.shape = slots[k].shape;
      full.data = std::move(values);
      out.data = slice_host_tensor(full, slice).data;
    } else {
      out.data = std::move(values);
    }
  }
  if (permuted) {
    for (LayerWeights& layer : weights.layers) {
      // The permutation is within each head, so a rank's whole heads unpermute alone.
      unpermute_rows(layer.q_proj, shard ? shard->num_heads : config.num_heads);
      unpermute_rows(layer.k_proj, shard ? shard->num_kv_heads : config.num_kv_heads);
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (kept_tensors > 0)
    spdlog::info("kept {} of {} tensors of {} in their block formats ({:.1f} MiB) in {:.2f} s",
                 kept_tensors, slots.size(), src, double(kept_bytes) / double(1 << 20), seconds);
  else
    spdlog::info(
        "dequantized {} tensors from {} ({:.1f} MiB in the file -> {:.1f} MiB fp32) in {:.2f} s",
        slots.size(), src, double(file_bytes) / double(1 << 20),
        double(elements) * 4.0 / double(1 << 20), seconds);
  return weights;
}

}  // namespace relayllm
