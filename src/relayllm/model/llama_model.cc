#include "relayllm/model/llama_model.h"

#include <array>
#include <cmath>

#include "relayllm/common/error.h"
#include "relayllm/dist/communicator.h"
#include "relayllm/model/model_limits.h"

namespace relayllm {

LlamaModel::LlamaModel(const ModelConfig& config, const ModelWeights& weights, Backend& backend,
                       int64_t max_positions, Communicator* comm)
    : config_(config),
      backend_(backend),
      comm_(comm && comm->size() > 1 ? comm : nullptr),
      shard_(shard_layout(config, comm_ ? comm_->rank() : 0, comm_ ? comm_->size() : 1)) {
  embed_tokens_ = upload(weights.embed_tokens);
  for (const LayerWeights& w : weights.layers) {
    Layer layer;
    layer.input_norm = upload(w.input_norm);
    layer.q_proj = upload(w.q_proj);
    layer.k_proj = upload(w.k_proj);
    layer.v_proj = upload(w.v_proj);
    layer.o_proj = upload(w.o_proj);
    if (config.qkv_bias) {
      layer.q_bias = upload(w.q_bias);
      layer.k_bias = upload(w.k_bias);
      layer.v_bias = upload(w.v_bias);
    }
    if (config.qk_norm) {
      layer.q_norm = upload(w.q_norm);
      layer.k_norm = upload(w.k_norm);
    }
    layer.post_attention_norm = upload(w.post_attention_norm);
    layer.gate_proj = upload(w.gate_proj);
    layer.up_proj = upload(w.up_proj);
    layer.down_proj = upload(w.down_proj);
    // One pass over the normed input for q, k and v, and one for gate and up (bias and
    // per-head norms are applied to the parts as before).
    layer.qkv_proj = backend_.fuse_rows(std::array{layer.q_proj, layer.k_proj, layer.v_proj});
    if (layer.qkv_proj.defined()) layer.q_proj = layer.k_proj = layer.v_proj = Tensor{};
    layer.gate_up_proj = backend_.fuse_rows(std::array{layer.gate_proj, layer.up_proj});
    if (layer.gate_up_proj.defined()) layer.gate_proj = layer.up_proj = Tensor{};
    layers_.push_back(std::move(layer));
  }
  final_norm_ = upload(weights.final_norm);
  lm_head_ = weights.lm_head.empty() ? embed_tokens_ : upload(weights.lm_head);

  // cos/sin per position, computed in double from the exact inverse frequencies and
  // rounded once, so every backend rotates by the same angles.
  std::vector<double> inv_freq = rope_inverse_frequencies(config);
  int64_t d = config.head_dim, half = d / 2;
  RELAYLLM_CHECK(int64_t(inv_freq.size()) == half, "rope: {} inverse frequencies for head_dim {}",
                 inv_freq.size(), d);
  // The loaders bound both (validate_model_config); a caller passing more is a bug, and the
  // product must never wrap into a short table that rope would read past.
  RELAYLLM_CHECK(max_positions > 0 && max_positions <= kMaxPositions && d > 0 && d <= kMaxHidden,
                 "rope table of {} positions x head_dim {} is out of range", max_positions, d);
  std::vector<float> table(size_t(max_positions) * size_t(d));
  for (int64_t p = 0; p < max_positions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      double angle = double(p) * inv_freq[i];
      table[p * d + i] = float(std::cos(angle));
      table[p * d + half + i] = float(std::sin(angle));
    }
  rope_cos_sin_ = backend_.upload(table, {max_positions, d}, DType::kF32);

  attention_shape_ = {int32_t(shard_.num_heads), int32_t(shard_.num_kv_heads),
                      int32_t(config.head_dim), float(1.0 / std::sqrt(double(config.head_dim)))};
}

Tensor LlamaModel::upload(const HostTensor& host) {
  if (host.format != WeightFormat::kNone)
    return backend_.upload_blocks(host.format, host.blocks, host.shape);
  return backend_.upload(host.data, host.shape, backend_.compute_dtype());
}

std::vector<KvLayer> LlamaModel::allocate_kv_cache(int32_t num_blocks, int32_t block_size) {
  std::vector<KvLayer> cache;
  DType dtype = backend_.kv_dtype();
  for (int64_t l = 0; l < config_.num_layers; ++l)
    cache.push_back(
        {backend_.empty({num_blocks, block_size, shard_.num_kv_heads, config_.head_dim}, dtype),
         backend_.empty({num_blocks, block_size, shard_.num_kv_heads, config_.head_dim}, dtype)});
  return cache;
}

size_t LlamaModel::kv_bytes_per_block(int32_t block_size) const {
  return size_t(2) * config_.num_layers * block_size * shard_.num_kv_heads * config_.head_dim *
         dtype_size(backend_.kv_dtype());
}

LlamaModel::Activations LlamaModel::make_activations(int64_t t, int64_t logit_rows) {
  const int64_t h = config_.hidden_size, d = config_.head_dim;
  const int64_t hq = shard_.num_heads, hk = shard_.num_kv_heads, inter = shard_.intermediate;
  const DType dt = backend_.compute_dtype();
  Backend& be = backend_;
  Activations a;
  a.residual = be.empty({t, h}, dt);
  a.normed = be.empty({t, h}, dt);
  a.q = be.empty({t, hq, d}, dt);
  a.k = be.empty({t, hk, d}, dt);
  a.v = be.empty({t, hk, d}, dt);
  a.attn = be.empty({t, hq * d}, dt);
  a.proj = be.empty({t, h}, dt);
  a.gate = be.empty({t, inter}, dt);
  a.up = be.empty({t, inter}, dt);
  a.act = be.empty({t, inter}, dt);
  a.selected = be.empty({logit_rows, h}, dt);
  // Logits leave the lm_head GEMM in fp32 (fp32 accumulation, no 16-bit rounding):
  // near-tied tokens then compare the way the reference computes them.
  a.logits = be.empty({logit_rows, config_.vocab_size}, DType::kF32);
  return a;
}

LlamaModel::Activations LlamaModel::first_rows(const Activations& all, int64_t rows) {
  // Row-major tensors: the first rows of a tensor are a prefix of its storage.
  auto view = [rows](Tensor t) {
    t.shape[0] = rows;
    return t;
  };
  return {view(all.residual), view(all.normed), view(all.q),        view(all.k),
          view(all.v),        view(all.attn),   view(all.proj),     view(all.gate),
          view(all.up),       view(all.act),    view(all.selected), view(all.logits)};
}

void LlamaModel::validate(const BatchPlan& plan) const {
  // Replayed graphs skip the ops' own checks, so the step's inputs are checked here.
  const int64_t max_pos = rope_cos_sin_.rows();
  for (int32_t id : plan.token_ids)
    RELAYLLM_CHECK(id >= 0 && id < config_.vocab_size,
                   "token id {} is outside the vocabulary [0, {})", id, config_.vocab_size);
  for (int32_t pos : plan.positions)
    RELAYLLM_CHECK(pos >= 0 && pos < max_pos, "position {} is beyond the rope table ({} positions)",
                   pos, max_pos);
}

void LlamaModel::forward(const BatchPlan& plan, std::vector<KvLayer>& kv_cache,
                         std::vector<float>& logits) {
  validate(plan);
  const int64_t n = int64_t(plan.logit_rows.size());
  backend_.begin_step(plan, StepInfo{attention_shape_, 0});
  Activations a = make_activations(plan.num_rows(), n);
  run(plan, kv_cache, a);
  if (shard_.rank != 0) {  // logits exist on rank 0 only
    logits.clear();
    return;
  }
  // The download writes every value: no zeroing first (a batch of 256 rows at a 32k vocabulary
  // is 32 MB a step).
  logits.resize(size_t(n * config_.vocab_size));
  if (n > 0) backend_.download(a.logits, logits);
}

void LlamaModel::run(const BatchPlan& plan, std::vector<KvLayer>& kv_cache, Activations& a) {
  const int64_t t = a.residual.dim(0), d = config_.head_dim;
  const int64_t hq = shard_.num_heads, hk = shard_.num_kv_heads;
  const float eps = float(config_.rms_norm_eps);
  Backend& be = backend_;

  be.embedding(embed_tokens_, plan, a.residual);
  be.rmsnorm(a.residual, layers_.empty() ? final_norm_ : layers_[0].input_norm, eps, a.normed);
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& layer = layers_[l];
    Tensor q2 = a.q, k2 = a.k, v2 = a.v;  // 2-D views for the projections
    q2.shape = {t, hq * d};
    k2.shape = {t, hk * d};
    v2.shape = {t, hk * d};
    const bool bias = config_.qkv_bias;
    if (layer.qkv_proj.defined()) {
      const std::array<const Tensor*, 3> biases{bias ? &layer.q_bias : nullptr,
                                                bias ? &layer.k_bias : nullptr,
                                                bias ? &layer.v_bias : nullptr};
      const std::array<Tensor*, 3> outs{&q2, &k2, &v2};
      be.linear_parts(a.normed, layer.qkv_proj, biases, outs);
    } else {
      be.linear(a.normed, layer.q_proj, bias ? &layer.q_bias : nullptr, q2);
      be.linear(a.normed, layer.k_proj, bias ? &layer.k_bias : nullptr, k2);
      be.linear(a.normed, layer.v_proj, bias ? &layer.v_bias : nullptr, v2);
    }
    if (config_.qk_norm) {
      be.rmsnorm(a.q, layer.q_norm, eps, a.q);
      be.rmsnorm(a.k, layer.k_norm, eps, a.k);
    }
    be.rope_write_kv(a.q, a.k, a.v, rope_cos_sin_, kv_cache[l], plan);
    Tensor attn3 = a.attn;
    attn3.shape = {t, hq, d};
    be.attention(a.q, kv_cache[l], attention_shape_, plan, attn3);
    be.linear(a.attn, layer.o_proj, nullptr, a.proj);
    all_reduce(a.proj);
    be.add_rmsnorm(a.residual, a.proj, layer.post_attention_norm, eps, a.normed);
    if (layer.gate_up_proj.defined()) {
      be.linear_silu_mul(a.normed, layer.gate_up_proj, a.gate, a.up, a.act);
    } else {
      be.linear(a.normed, layer.gate_proj, nullptr, a.gate);
      be.linear(a.normed, layer.up_proj, nullptr, a.up);
      be.silu_mul(a.gate, a.up, a.act);
    }
    be.linear(a.act, layer.down_proj, nullptr, a.proj);
    all_reduce(a.proj);
    const Tensor& next_norm = l + 1 < layers_.size() ? layers_[l + 1].input_norm : final_norm_;
    be.add_rmsnorm(a.residual, a.proj, next_norm, eps, a.normed);
  }
  // The lm_head is replicated; its logits are needed only where sampling runs (rank 0).
  if (a.logits.dim(0) == 0 || shard_.rank != 0) return;
  be.gather_logit_rows(a.normed, plan, a.selected);
  be.linear(a.selected, lm_head_, nullptr, a.logits);
}

void LlamaModel::all_reduce(Tensor& x) {
  if (comm_) backend_.all_reduce_sum(x, *comm_);
}

}  // namespace relayllm
