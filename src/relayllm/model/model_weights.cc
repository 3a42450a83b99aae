#include "relayllm/model/model_weights.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <random>

#include "relayllm/common/error.h"
#include "relayllm/common/thread_pool.h"
#include "relayllm/formats/safetensors.h"
#include "relayllm/model/compressed_tensors.h"
#include "relayllm/model/model_limits.h"
#include "relayllm/model/tensor_parallel.h"

namespace relayllm {
namespace {

// Elements per independently seeded block of dummy weights, and per conversion task.
constexpr size_t kChunk = size_t(1) << 18;

std::string layer_name(int64_t layer, const char* suffix) {
  return fmt::format("model.layers.{}.{}", layer, suffix);
}

// A private pool unless the caller lends one; tiny models stay single-threaded.
ThreadPool& pick_pool(ThreadPool* lent, std::optional<ThreadPool>& own, size_t total_elements) {
  if (lent) return *lent;
  own.emplace(total_elements > 4 * kChunk ? 0 : 1);
  return *own;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [-1, 1) from the top 53 bits: defined by the engine alone (unlike
// std::uniform_real_distribution, whose algorithm is up to the standard library).
double symmetric_uniform(std::mt19937_64& rng) {
  return double(rng() >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}

}  // namespace

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<WeightSlot> weight_slots(ModelWeights& w, const ModelConfig& c) {
  const int64_t hidden = c.hidden_size, q_out = c.num_heads * c.head_dim,
                kv_out = c.num_kv_heads * c.head_dim, inter = c.intermediate_size;
  std::vector<WeightSlot> slots;
  slots.push_back({"model.embed_tokens.weight",
                   {c.vocab_size, hidden},
                   WeightKind::kEmbedding,
                   &w.embed_tokens});
  w.layers.resize(size_t(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    LayerWeights& l = w.layers[size_t(i)];
    auto add = [&](const char* suffix, std::vector<int64_t> shape, WeightKind kind, HostTensor* t) {
      slots.push_back({layer_name(i, suffix), std::move(shape), kind, t});
    };
    add("input_layernorm.weight", {hidden}, WeightKind::kNorm, &l.input_norm);
    add("self_attn.q_proj.weight", {q_out, hidden}, WeightKind::kLinear, &l.q_proj);
    add("self_attn.k_proj.weight", {kv_out, hidden}, WeightKind::kLinear, &l.k_proj);
    add("self_attn.v_proj.weight", {kv_out, hidden}, WeightKind::kLinear, &l.v_proj);
    if (c.qkv_bias) {
      add("self_attn.q_proj.bias", {q_out}, WeightKind::kBias, &l.q_bias);
      add("self_attn.k_proj.bias", {kv_out}, WeightKind::kBias, &l.k_bias);
      add("self_attn.v_proj.bias", {kv_out}, WeightKind::kBias, &l.v_bias);
    }
    if (c.qk_norm) {
      add("self_attn.q_norm.weight", {c.head_dim}, WeightKind::kNorm, &l.q_norm);
      add("self_attn.k_norm.weight", {c.head_dim}, WeightKind::kNorm, &l.k_norm);
    }
    add("self_attn.o_proj.weight", {hidden, q_out}, WeightKind::kLinear, &l.o_proj);
    add("post_attention_layernorm.weight", {hidden}, WeightKind::kNorm, &l.post_attention_norm);
    add("mlp.gate_proj.weight", {inter, hidden}, WeightKind::kLinear, &l.gate_proj);
    add("mlp.up_proj.weight", {inter, hidden}, WeightKind::kLinear, &l.up_proj);
    add("mlp.down_proj.weight", {hidden, inter}, WeightKind::kLinear, &l.down_proj);
  }
  slots.push_back({"model.norm.weight", {hidden}, WeightKind::kNorm, &w.final_norm});
  if (!c.tie_word_embeddings)
    slots.push_back({"lm_head.weight", {c.vocab_size, hidden}, WeightKind::kLinear, &w.lm_head});
  return slots;
}

ModelWeights load_weights(const std::filesystem::path& model_dir, const ModelConfig& config,
                          ThreadPool* pool, const WeightFormatFilter& keep,
                          const ShardLayout* shard) {
  const auto start = std::chrono::steady_clock::now();
  SafetensorsCheckpoint checkpoint(model_dir);
  // An FP8 compressed-tensors checkpoint (its config.json says so; anything else it says
  // about quantization is refused here, before any tensor is read).
  const std::optional<Fp8CheckpointScheme> fp8 = read_quantization_config(model_dir);
  check_layer_tensors(checkpoint.tensor_names(), "model.layers.", config.num_layers,
                      checkpoint.source().filename().string(), "config.json num_hidden_layers");
  ModelWeights weights;
  std::vector<WeightSlot> slots = weight_slots(weights, config);

  // Check every name, dtype and shape before converting anything, so a bad
  // checkpoint fails fast and with the first problem in file order.
  std::vector<const TensorView*> views;
  size_t total_elements = 0, total_bytes = 0;
  for (const WeightSlot& slot : slots) {
    const TensorView* view = checkpoint.find(slot.name);
    if (!view) fail("{}: missing tensor {}", checkpoint.source().filename().string(), slot.name);
    const std::string file = view->file->filename().string();
    if (view->shape != slot.shape)
      fail("{}: tensor {} has shape [{}], expected [{}]", file, slot.name,
           fmt::join(view->shape, ", "), fmt::join(slot.shape, ", "));
    if (view->dtype_name == "F8_E4M3") {
      RELAYLLM_CHECK(fp8.has_value(),
                     "{}: tensor {} is F8_E4M3 but config.json has no compressed-tensors "
                     "quantization_config",
                     file, slot.name);
      RELAYLLM_CHECK(slot.kind == WeightKind::kLinear,
                     "{}: tensor {} is F8_E4M3; only linear layers' weights may be FP8", file,
                     slot.name);
      RELAYLLM_CHECK(shard == nullptr,
                     "{}: FP8 checkpoints with tensor parallelism are not supported yet (run "
                     "one rank)",
                     file);
    } else if (view->dtype == SafetensorsDType::kOther) {
      fail("{}: tensor {} has dtype {}, expected F32, F16 or BF16{}", file, slot.name,
           view->dtype_name, fp8 ? " (or F8_E4M3 for linear weights)" : "");
    }
    views.push_back(view);
    total_elements += size_t(view->numel());
    total_bytes += view->bytes.size();
  }
  const bool big = total_bytes > (size_t(256) << 20);
  if (big)
    spdlog::info("loading {} tensors ({:.1f} GiB) from {}", slots.size(),
                 double(total_bytes) / double(1u << 30), model_dir.string());

  std::optional<ThreadPool> own_pool;
  ThreadPool& workers = pick_pool(pool, own_pool, total_elements);
  size_t done_bytes = 0, next_report = total_bytes / 10, fp8_dequantized = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    const TensorView& view = *views[i];
    HostTensor& tensor = *slots[i].tensor;
    const WeightSlice slice = shard ? weight_slice(slots[i], *shard) : WeightSlice{};
    tensor.shape = sliced_shape(slots[i].shape, slice);
    const WeightKind kind = slots[i].kind;
    if (view.dtype_name == "F8_E4M3") {
      const TensorLookup lookup = [&](const std::string& name) { return checkpoint.find(name); };
      load_fp8_linear(view, *fp8, lookup, keep && keep(WeightFormat::kFP8), tensor);
      fp8_dequantized += tensor.format != WeightFormat::kFP8;
      done_bytes += view.bytes.size();
      continue;
    }
    const WeightFormat half = view.dtype == SafetensorsDType::kBF16  ? WeightFormat::kBF16
                              : view.dtype == SafetensorsDType::kF16 ? WeightFormat::kF16
                                                                     : WeightFormat::kNone;
    // 16-bit tensors stay as they are only when read whole: a tensor-parallel rank's slice is
    // converted to fp32 (the slicing below works on converted values).
    if (!shard && (kind == WeightKind::kLinear || kind == WeightKind::kEmbedding) &&
        half != WeightFormat::kNone && keep && keep(half) && tensor.shape.size() == 2) {
      // Same little-endian 16-bit values as the backend's kF16/kBF16 rows: copied as they are.
      tensor.format = half;
      tensor.blocks.assign(view.bytes.begin(), view.bytes.end());
      done_bytes += view.bytes.size();
      continue;
    }
    tensor.data.resize(size_t(tensor.numel()));
    float* out = tensor.data.data();
    if (slice.axis == SliceAxis::kCols) {
      // Row-parallel: this rank's columns of every row, read row by row from the map.
      const size_t cols = size_t(slots[i].shape[1]), width = size_t(slice.end - slice.begin);
      workers.parallel_for(size_t(slots[i].shape[0]), [&](size_t first, size_t last) {
        for (size_t r = first; r < last; ++r)
          to_float(view, r * cols + size_t(slice.begin), r * cols + size_t(slice.end),
                   out + r * width);
      });
    } else {
      // Whole, or column-parallel: a contiguous run of rows.
      const size_t offset = slice.axis == SliceAxis::kRows
                                ? size_t(slice.begin) * size_t(view.numel() / slots[i].shape[0])
                                : 0;
      workers.parallel_for(
          tensor.data.size(),
          [&](size_t begin, size_t end) {
            to_float(view, offset + begin, offset + end, out + begin);
          },
          kChunk);
    }
    done_bytes += view.bytes.size();
    if (big && done_bytes >= next_report && done_bytes < total_bytes) {
      spdlog::info("  {}/{} tensors, {:.0f}%", i + 1, slots.size(),
                   100.0 * double(done_bytes) / double(total_bytes));
      next_report += total_bytes / 10;
    }
  }
  if (fp8_dequantized > 0)
    spdlog::warn("{} FP8 weight tensors dequantized at load: this backend does not run FP8 GEMMs",
                 fp8_dequantized);
  if (big) {
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    spdlog::info("loaded {} tensors ({:.1f} GiB) in {:.1f} s", slots.size(),
                 double(total_bytes) / double(1u << 30), seconds);
  }
  return weights;
}

ModelWeights make_dummy_weights(const ModelConfig& config, uint64_t seed, ThreadPool* pool,
                                const ShardLayout* shard) {
  ModelWeights weights;
  std::vector<WeightSlot> slots = weight_slots(weights, config);
  size_t total_elements = 0;
  for (const WeightSlot& slot : slots) {
    int64_t n = 1;
    for (int64_t d : slot.shape) n *= d;
    total_elements += size_t(n);
  }
  std::optional<ThreadPool> own_pool;
  ThreadPool& workers = pick_pool(pool, own_pool, total_elements);
  for (size_t t = 0; t < slots.size(); ++t) {
    const WeightSlot& slot = slots[t];
    HostTensor& tensor = *slot.tensor;
    tensor.shape = slot.shape;
    tensor.data.resize(size_t(tensor.numel()));
    double scale = 0, offset = 0;
    switch (slot.kind) {
      case WeightKind::kLinear:
      case WeightKind::kEmbedding:  // embeddings feed a norm and, when tied, the lm_head
        scale = std::sqrt(3.0 / double(slot.shape.back()));
        break;
      case WeightKind::kNorm:
        offset = 1.0;
        scale = 0.1;
        break;
      case WeightKind::kBias:
        scale = 0.05;
        break;
    }
    // Each fixed-size chunk has its own generator seeded from (seed, tensor, chunk),
    // so the bytes do not depend on how chunks are spread over threads.
    const size_t num_chunks = (tensor.data.size() + kChunk - 1) / kChunk;
    float* data = tensor.data.data();
    const size_t n = tensor.data.size();
    workers.parallel_for(num_chunks, [&](size_t first, size_t last) {
      for (size_t chunk = first; chunk < last; ++chunk) {
        std::mt19937_64 rng(splitmix64(seed ^ splitmix64((uint64_t(t) << 32) | chunk)));
        for (size_t i = chunk * kChunk, end = std::min(n, i + kChunk); i < end; ++i)
          data[i] = float(offset + scale * symmetric_uniform(rng));
      }
    });
    if (shard) {
      const WeightSlice slice = weight_slice(slot, *shard);
      if (!slice.whole()) tensor = slice_host_tensor(tensor, slice);
    }
  }
  return weights;
}

}  // namespace relayllm
