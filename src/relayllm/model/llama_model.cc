#include "relayllm/model/llama_model.h"

#include <cmath>

#include "relayllm/common/error.h"

namespace relayllm {

LlamaModel::LlamaModel(const ModelConfig& config, const ModelWeights& weights, Backend& backend,
                       int64_t max_positions)
    : config_(config), backend_(backend) {
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
  std::vector<float> table(size_t(max_positions * d));
  for (int64_t p = 0; p < max_positions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      double angle = double(p) * inv_freq[i];
      table[p * d + i] = float(std::cos(angle));
      table[p * d + half + i] = float(std::sin(angle));
    }
  rope_cos_sin_ = backend_.upload(table, {max_positions, d}, DType::kF32);

  attention_shape_ = {int32_t(config.num_heads), int32_t(config.num_kv_heads),
                      int32_t(config.head_dim), float(1.0 / std::sqrt(double(config.head_dim)))};
}

Tensor LlamaModel::upload(const HostTensor& host) {
  return backend_.upload(host.data, host.shape, backend_.compute_dtype());
}

std::vector<KvLayer> LlamaModel::allocate_kv_cache(int32_t num_blocks, int32_t block_size) {
  std::vector<KvLayer> cache;
  DType dtype = backend_.compute_dtype();
  for (int64_t l = 0; l < config_.num_layers; ++l)
    cache.push_back({backend_.empty({num_blocks, block_size, config_.num_kv_heads, config_.head_dim}, dtype),
                     backend_.empty({num_blocks, block_size, config_.num_kv_heads, config_.head_dim}, dtype)});
  return cache;
}

size_t LlamaModel::kv_bytes_per_block(int32_t block_size) const {
  return size_t(2) * config_.num_layers * block_size * config_.num_kv_heads * config_.head_dim *
         dtype_size(backend_.compute_dtype());
}

void LlamaModel::forward(const BatchPlan& plan, std::vector<KvLayer>& kv_cache,
                         std::vector<float>& logits) {
  const int64_t t = plan.num_rows(), h = config_.hidden_size, d = config_.head_dim;
  const int64_t hq = config_.num_heads, hk = config_.num_kv_heads, inter = config_.intermediate_size;
  const float eps = float(config_.rms_norm_eps);
  const DType dt = backend_.compute_dtype();
  Backend& be = backend_;
  be.begin_step(plan);

  Tensor residual = be.empty({t, h}, dt);
  Tensor normed = be.empty({t, h}, dt);
  Tensor q = be.empty({t, hq, d}, dt), k = be.empty({t, hk, d}, dt), v = be.empty({t, hk, d}, dt);
  Tensor attn = be.empty({t, hq * d}, dt);
  Tensor proj = be.empty({t, h}, dt);
  Tensor gate = be.empty({t, inter}, dt), up = be.empty({t, inter}, dt), act = be.empty({t, inter}, dt);

  be.embedding(embed_tokens_, plan, residual);
  be.rmsnorm(residual, layers_.empty() ? final_norm_ : layers_[0].input_norm, eps, normed);
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& layer = layers_[l];
    Tensor q2 = q, k2 = k, v2 = v;  // 2-D views for the projections
    q2.shape = {t, hq * d};
    k2.shape = {t, hk * d};
    v2.shape = {t, hk * d};
    be.linear(normed, layer.q_proj, config_.qkv_bias ? &layer.q_bias : nullptr, q2);
    be.linear(normed, layer.k_proj, config_.qkv_bias ? &layer.k_bias : nullptr, k2);
    be.linear(normed, layer.v_proj, config_.qkv_bias ? &layer.v_bias : nullptr, v2);
    if (config_.qk_norm) {
      be.rmsnorm(q, layer.q_norm, eps, q);
      be.rmsnorm(k, layer.k_norm, eps, k);
    }
    be.rope(q, k, rope_cos_sin_, plan);
    be.write_kv(k, v, kv_cache[l], plan);
    Tensor attn3 = attn;
    attn3.shape = {t, hq, d};
    be.attention(q, kv_cache[l], attention_shape_, plan, attn3);
    be.linear(attn, layer.o_proj, nullptr, proj);
    be.add_rmsnorm(residual, proj, layer.post_attention_norm, eps, normed);
    be.linear(normed, layer.gate_proj, nullptr, gate);
    be.linear(normed, layer.up_proj, nullptr, up);
    be.silu_mul(gate, up, act);
    be.linear(act, layer.down_proj, nullptr, proj);
    const Tensor& next_norm = l + 1 < layers_.size() ? layers_[l + 1].input_norm : final_norm_;
    be.add_rmsnorm(residual, proj, next_norm, eps, normed);
  }

  const int64_t n = int64_t(plan.logit_rows.size());
  logits.assign(size_t(n * config_.vocab_size), 0.0f);
  if (n == 0) return;
  Tensor selected = be.empty({n, h}, dt);
  be.gather_logit_rows(normed, plan, selected);
  Tensor out = be.empty({n, config_.vocab_size}, dt);
  be.linear(selected, lm_head_, nullptr, out);
  be.download(out, logits);
}

}  // namespace relayllm
