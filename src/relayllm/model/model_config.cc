#include "relayllm/model/model_config.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <numbers>

#include "relayllm/common/error.h"
#include "relayllm/common/json_fields.h"
#include "relayllm/model/model_limits.h"

namespace relayllm {
namespace {

using json_fields::get_bool;
using json_fields::get_double;
using json_fields::get_integral;
using json_fields::get_string;
using json_fields::require_integral;

struct ArchitectureFlags {
  bool qkv_bias = false;
  bool qk_norm = false;
};

ArchitectureFlags architecture_flags(const std::string& architecture, const std::string& source) {
  if (architecture == "LlamaForCausalLM" || architecture == "MistralForCausalLM") return {};
  if (architecture == "Qwen2ForCausalLM") return {.qkv_bias = true};
  if (architecture == "Qwen3ForCausalLM") return {.qk_norm = true};
  fail(
      "{}: unsupported architecture \"{}\" (supported: LlamaForCausalLM, MistralForCausalLM, "
      "Qwen2ForCausalLM, Qwen3ForCausalLM)",
      source, architecture);
}

std::string read_architecture(const nlohmann::json& json, const std::string& source) {
  if (const nlohmann::json* list = json_fields::find(json, "architectures")) {
    if (!list->is_array() || list->empty() || !(*list)[0].is_string())
      fail("{}: field architectures must be a non-empty list of names, got {}", source,
           list->dump());
    return (*list)[0].get<std::string>();
  }
  // Configs written by hand sometimes carry only model_type.
  std::optional<std::string> model_type = get_string(json, "model_type", source);
  if (!model_type) fail("{}: missing field architectures (and no model_type)", source);
  if (*model_type == "llama") return "LlamaForCausalLM";
  if (*model_type == "mistral") return "MistralForCausalLM";
  if (*model_type == "qwen2") return "Qwen2ForCausalLM";
  if (*model_type == "qwen3") return "Qwen3ForCausalLM";
  fail("{}: unsupported model_type \"{}\" and no architectures field", source, *model_type);
}

// transformers 5 may nest rope parameters per layer type ({"full_attention": {...}}).
// This engine has one rope for all layers, so such a dict must hold identical entries.
const nlohmann::json& flatten_per_layer_rope(const nlohmann::json& params, const std::string& field,
                                             const std::string& source) {
  if (params.contains("rope_type") || params.contains("type") || params.contains("rope_theta"))
    return params;
  const nlohmann::json* first = nullptr;
  for (const auto& [layer_type, value] : params.items()) {
    if (!value.is_object()) return params;
    if (first && *first != value)
      fail("{}: field {} has different rope parameters per layer type, which is unsupported",
           source, field);
    first = &value;
  }
  return first ? *first : params;
}

RopeConfig parse_rope(const nlohmann::json& json, const std::string& source) {
  RopeConfig rope;
  std::optional<double> top_theta = get_double(json, "rope_theta", source);
  // transformers 5 writes everything under rope_parameters; older configs use
  // rope_theta plus an optional rope_scaling dict.
  std::string field = "rope_parameters";
  const nlohmann::json* params = json_fields::find(json, "rope_parameters");
  if (!params) {
    field = "rope_scaling";
    params = json_fields::find(json, "rope_scaling");
  }
  if (params && !params->is_object())
    fail("{}: field {} must be an object, got {}", source, field, params->dump());
  static const nlohmann::json kEmpty = nlohmann::json::object();
  const nlohmann::json& p = params ? flatten_per_layer_rope(*params, field, source) : kEmpty;
  auto name = [&](const char* key) { return field + "." + key; };

  std::optional<double> theta = get_double(p, "rope_theta", source);
  rope.theta = theta ? *theta : top_theta ? *top_theta : 10000.0;
  if (!(rope.theta > 1) || !std::isfinite(rope.theta))
    fail("{}: field {} must be finite and > 1, got {}", source,
         theta ? name("rope_theta") : "rope_theta", rope.theta);

  std::string type = "default";
  std::string type_key = "rope_type";
  if (auto t = get_string(p, "rope_type", source)) {
    type = *t;
  } else if (auto legacy = get_string(p, "type", source)) {
    type = *legacy;
    type_key = "type";
  }
  if (std::optional<double> partial = get_double(p, "partial_rotary_factor", source);
      partial && *partial != 1.0)
    fail("{}: field {} = {} is unsupported (rope over the whole head only)", source,
         name("partial_rotary_factor"), *partial);

  auto require_double = [&](const char* key) {
    std::optional<double> value = get_double(p, key, source);
    if (!value) fail("{}: rope type \"{}\" needs field {}", source, type, name(key));
    return *value;
  };
  if (type == "default") {
    rope.type = RopeType::kDefault;
  } else if (type == "linear" || type == "dynamic") {
    rope.type = type == "linear" ? RopeType::kLinear : RopeType::kDynamic;
    rope.factor = require_double("factor");
    if (!(rope.factor >= 1) || !std::isfinite(rope.factor))
      fail("{}: field {} must be finite and >= 1, got {}", source, name("factor"), rope.factor);
  } else if (type == "llama3") {
    rope.type = RopeType::kLlama3;
    rope.factor = require_double("factor");
    rope.low_freq_factor = require_double("low_freq_factor");
    rope.high_freq_factor = require_double("high_freq_factor");
    std::optional<int64_t> original = get_integral(p, "original_max_position_embeddings", source);
    if (!original)
      fail("{}: rope type \"llama3\" needs field {}", source,
           name("original_max_position_embeddings"));
    rope.original_max_position_embeddings = *original;
    if (!(rope.factor > 0) || !std::isfinite(rope.factor) || !(rope.low_freq_factor > 0) ||
        !std::isfinite(rope.high_freq_factor) || !(rope.high_freq_factor > rope.low_freq_factor) ||
        rope.original_max_position_embeddings <= 0)
      fail(
          "{}: invalid llama3 rope parameters in field {} (factor {}, low_freq_factor {}, "
          "high_freq_factor {}, original_max_position_embeddings {})",
          source, field, rope.factor, rope.low_freq_factor, rope.high_freq_factor,
          rope.original_max_position_embeddings);
  } else {
    fail(
        "{}: unsupported rope type \"{}\" in field {} (supported: default, linear, dynamic, "
        "llama3)",
        source, type, name(type_key.c_str()));
  }
  return rope;
}

}  // namespace

const char* rope_type_name(RopeType type) {
  switch (type) {
    case RopeType::kDefault:
      return "default";
    case RopeType::kLinear:
      return "linear";
    case RopeType::kLlama3:
      return "llama3";
    case RopeType::kDynamic:
      return "dynamic";
  }
  return "?";
}

ModelConfig parse_model_config_json(const nlohmann::json& json, const std::string& source) {
  if (!json.is_object()) fail("{}: expected a JSON object at top level", source);
  ModelConfig c;
  c.architecture = read_architecture(json, source);
  ArchitectureFlags flags = architecture_flags(c.architecture, source);
  c.qkv_bias = flags.qkv_bias;
  c.qk_norm = flags.qk_norm;

  auto positive = [&](const char* key, std::optional<int64_t> fallback = std::nullopt) {
    std::optional<int64_t> value = get_integral(json, key, source);
    if (!value) value = fallback;
    if (!value) fail("{}: missing field {}", source, key);
    if (*value <= 0) fail("{}: field {} must be positive, got {}", source, key, *value);
    return *value;
  };
  c.vocab_size = positive("vocab_size");
  c.hidden_size = positive("hidden_size");
  c.intermediate_size = positive("intermediate_size");
  c.num_layers = positive("num_hidden_layers");
  c.num_heads = positive("num_attention_heads");
  c.num_kv_heads = positive("num_key_value_heads", c.num_heads);
  // Qwen 3 (and some Llama/Mistral variants) set head_dim != hidden_size / num_heads.
  c.head_dim = positive("head_dim", c.hidden_size / c.num_heads);
  c.max_position_embeddings = positive("max_position_embeddings", 2048);
  if (c.num_heads % c.num_kv_heads != 0)
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", source,
         c.num_heads, c.num_kv_heads);
  if (c.head_dim % 2 != 0)
    fail("{}: field head_dim must be even for rope, got {}", source, c.head_dim);

  c.rms_norm_eps = get_double(json, "rms_norm_eps", source).value_or(1e-6);
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps))
    fail("{}: field rms_norm_eps must be finite and positive, got {}", source, c.rms_norm_eps);
  c.tie_word_embeddings = get_bool(json, "tie_word_embeddings", source).value_or(false);
  c.rope = parse_rope(json, source);

  if (auto act = get_string(json, "hidden_act", source); act && *act != "silu")
    fail("{}: field hidden_act \"{}\" is unsupported (only silu)", source, *act);
  if (get_bool(json, "mlp_bias", source).value_or(false))
    fail("{}: field mlp_bias = true is unsupported", source);
  // Llama/Mistral/Qwen 3's attention_bias also adds an o_proj bias, which this engine lacks;
  // Qwen 2's q/k/v bias is built into the architecture instead.
  if (c.architecture != "Qwen2ForCausalLM" &&
      get_bool(json, "attention_bias", source).value_or(false))
    fail("{}: field attention_bias = true is unsupported for {}", source, c.architecture);
  if (c.architecture == "MistralForCausalLM") {
    if (auto window = get_integral(json, "sliding_window", source)) {
      if (*window <= 0) fail("{}: field sliding_window must be positive, got {}", source, *window);
      c.sliding_window = *window;
    }
  } else if (get_bool(json, "use_sliding_window", source).value_or(false)) {
    fail("{}: field use_sliding_window = true is unsupported for {}", source, c.architecture);
  }

  // transformers 5 writes "dtype", older versions "torch_dtype".
  if (auto dtype = get_string(json, "dtype", source)) {
    c.torch_dtype = *dtype;
  } else if (auto torch_dtype = get_string(json, "torch_dtype", source)) {
    c.torch_dtype = *torch_dtype;
  }
  if (auto bos = json_fields::get_token_ids(json, "bos_token_id", source)) {
    if (bos->size() != 1) fail("{}: field bos_token_id must be a single id", source);
    c.bos_token_id = (*bos)[0];
  }
  c.eos_token_ids =
      json_fields::get_token_ids(json, "eos_token_id", source).value_or(std::vector<int32_t>{});
  validate_model_config(c, source);
  return c;
}

ModelConfig parse_model_config(const std::filesystem::path& config_json) {
  if (!std::filesystem::is_regular_file(config_json))
    fail("{}: config file not found", config_json.string());
  return parse_model_config_json(json_fields::read_json_file(config_json), config_json.string());
}

std::vector<double> rope_inverse_frequencies(const ModelConfig& config) {
  return rope_inverse_frequencies(config, config.max_position_embeddings);
}

std::vector<double> rope_inverse_frequencies(const ModelConfig& config, int64_t seq_len) {
  const RopeConfig& rope = config.rope;
  const int64_t dim = config.head_dim;
  double base = rope.theta;
  if (rope.type == RopeType::kDynamic && seq_len > config.max_position_embeddings) {
    // NTK-aware: stretch the base so the longest wavelength covers seq_len.
    double ratio =
        rope.factor * double(seq_len) / double(config.max_position_embeddings) - (rope.factor - 1);
    base *= std::pow(ratio, double(dim) / double(dim - 2));
  }
  std::vector<double> inv_freq(size_t(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i)
    inv_freq[size_t(i)] = 1.0 / std::pow(base, double(2 * i) / double(dim));

  if (rope.type == RopeType::kLinear) {
    for (double& f : inv_freq) f /= rope.factor;
  } else if (rope.type == RopeType::kLlama3) {
    // Long wavelengths are slowed by `factor`, short ones kept, the band between
    // interpolated smoothly in 1/wavelength.
    const double old_context = double(rope.original_max_position_embeddings);
    const double low_freq_wavelen = old_context / rope.low_freq_factor;
    const double high_freq_wavelen = old_context / rope.high_freq_factor;
    for (double& f : inv_freq) {
      double wavelen = 2 * std::numbers::pi / f;
      if (wavelen < high_freq_wavelen) continue;
      if (wavelen > low_freq_wavelen) {
        f /= rope.factor;
        continue;
      }
      double smooth = (old_context / wavelen - rope.low_freq_factor) /
                      (rope.high_freq_factor - rope.low_freq_factor);
      f = (1 - smooth) * f / rope.factor + smooth * f;
    }
  }
  return inv_freq;
}

}  // namespace relayllm
