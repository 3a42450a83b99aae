#include "relayllm/model/compressed_tensors.h"

#include <fmt/ranges.h>

#include <cmath>
#include <cstring>

#include "relayllm/backend/fp8_weight.h"
#include "relayllm/common/error.h"
#include "relayllm/common/json_fields.h"

namespace relayllm {
namespace {

using json_fields::describe_value;
using json_fields::find;

// "config.json: quantization_config.<path> is <value>; <what is supported>"
[[noreturn]] void refuse(const std::string& source, const std::string& path,
                         const nlohmann::json& value, const char* supported) {
  fail("{}: quantization_config{}{} is {}; {}", source, path.empty() ? "" : ".", path,
       value.is_null() ? std::string("absent (or null)") : describe_value(value), supported);
}

// A field that must equal `want` (a JSON value) when present, or be absent/null when
// `want` is null.
void expect(const nlohmann::json& object, const std::string& source, const std::string& path,
            const char* key, const nlohmann::json& want, const char* supported) {
  const nlohmann::json* v = find(object, key);
  if (want.is_null()) {
    if (v) refuse(source, path + "." + key, *v, supported);
    return;
  }
  if (!v || *v != want) refuse(source, path + "." + key, v ? *v : nlohmann::json(), supported);
}

constexpr const char* kSupported =
    "relayllm reads compressed-tensors FP8 checkpoints: weights {num_bits: 8, type: float, "
    "strategy: channel or tensor}, input_activations {dynamic: true, strategy: token} or "
    "{dynamic: false, strategy: tensor}";

// A scale tensor's values as fp32.
std::vector<float> scale_values(const TensorView& v) {
  std::vector<float> out(size_t(v.numel()));
  to_float(v, 0, out.size(), out.data());
  return out;
}

std::string file_of(const TensorView& v) {
  return v.file ? v.file->filename().string() : std::string("checkpoint");
}

}  // namespace

std::optional<Fp8CheckpointScheme> parse_quantization_config(const nlohmann::json& config,
                                                             const std::string& source) {
  const nlohmann::json* qc = find(config, "quantization_config");
  if (!qc) return std::nullopt;
  if (!qc->is_object()) refuse(source, "", *qc, "an object is expected");
  const nlohmann::json* method = find(*qc, "quant_method");
  if (!method || *method != "compressed-tensors")
    refuse(source, "quant_method", method ? *method : nlohmann::json(), kSupported);
  if (const nlohmann::json* format = find(*qc, "format");
      format && *format != "float-quantized" && *format != "naive-quantized")
    refuse(source, "format", *format, "relayllm reads 'float-quantized' FP8 checkpoints");
  if (const nlohmann::json* kv = find(*qc, "kv_cache_scheme"))
    refuse(source, "kv_cache_scheme", *kv, "an FP8 KV cache is not supported (null expected)");
  const nlohmann::json* groups = find(*qc, "config_groups");
  if (!groups || !groups->is_object() || groups->size() != 1)
    refuse(source, "config_groups", groups ? *groups : nlohmann::json(),
           "exactly one group is supported");
  const std::string name = "config_groups." + groups->begin().key();
  const nlohmann::json& group = groups->begin().value();
  if (!group.is_object()) refuse(source, name, group, "an object is expected");
  const nlohmann::json* targets = find(group, "targets");
  if (!targets || *targets != nlohmann::json::array({"Linear"}))
    refuse(source, name + ".targets", targets ? *targets : nlohmann::json(),
           "[\"Linear\"] is supported");
  if (const nlohmann::json* out = find(group, "output_activations"))
    refuse(source, name + ".output_activations", *out, "null expected");

  Fp8CheckpointScheme scheme;
  const nlohmann::json* w = find(group, "weights");
  const std::string wp = name + ".weights";
  if (!w || !w->is_object()) refuse(source, wp, w ? *w : nlohmann::json(), kSupported);
  expect(*w, source, wp, "num_bits", 8, kSupported);
  expect(*w, source, wp, "type", "float", kSupported);
  if (const nlohmann::json* sym = find(*w, "symmetric"); sym && *sym != true)
    refuse(source, wp + ".symmetric", *sym, "symmetric weights are supported");
  if (const nlohmann::json* dyn = find(*w, "dynamic"); dyn && *dyn != false)
    refuse(source, wp + ".dynamic", *dyn, "static weight scales are supported");
  expect(*w, source, wp, "group_size", nullptr, kSupported);
  expect(*w, source, wp, "block_structure", nullptr, kSupported);
  const nlohmann::json* strategy = find(*w, "strategy");
  if (strategy && *strategy == "channel")
    scheme.per_channel = true;
  else if (strategy && *strategy == "tensor")
    scheme.per_channel = false;
  else
    refuse(source, wp + ".strategy", strategy ? *strategy : nlohmann::json(), kSupported);

  const nlohmann::json* a = find(group, "input_activations");
  const std::string ap = name + ".input_activations";
  if (!a || !a->is_object())
    refuse(source, ap, a ? *a : nlohmann::json(),
           "weight-only FP8 is not supported; FP8 activations (dynamic per token or a static "
           "per-tensor scale) are");
  expect(*a, source, ap, "num_bits", 8, kSupported);
  expect(*a, source, ap, "type", "float", kSupported);
  if (const nlohmann::json* sym = find(*a, "symmetric"); sym && *sym != true)
    refuse(source, ap + ".symmetric", *sym, "symmetric activations are supported");
  expect(*a, source, ap, "group_size", nullptr, kSupported);
  const nlohmann::json* dynamic = find(*a, "dynamic");
  const nlohmann::json* a_strategy = find(*a, "strategy");
  if (dynamic && *dynamic == true) {
    if (!a_strategy || *a_strategy != "token")
      refuse(source, ap + ".strategy", a_strategy ? *a_strategy : nlohmann::json(),
             "dynamic activations are supported per token");
  } else if (dynamic && *dynamic == false) {
    if (!a_strategy || *a_strategy != "tensor")
      refuse(source, ap + ".strategy", a_strategy ? *a_strategy : nlohmann::json(),
             "static activations are supported per tensor");
    scheme.static_input = true;
  } else {
    refuse(source, ap + ".dynamic", dynamic ? *dynamic : nlohmann::json(), kSupported);
  }
  return scheme;
}

std::optional<Fp8CheckpointScheme> read_quantization_config(
    const std::filesystem::path& model_dir) {
  const std::filesystem::path path = model_dir / "config.json";
  if (!std::filesystem::exists(path)) return std::nullopt;
  return parse_quantization_config(json_fields::read_json_file(path), "config.json");
}

void load_fp8_linear(const TensorView& view, const Fp8CheckpointScheme& scheme,
                     const TensorLookup& lookup, bool keep_fp8, HostTensor& out) {
  const std::string file = file_of(view);
  RELAYLLM_CHECK(view.shape.size() == 2, "{}: FP8 tensor {} must be 2-D, has shape [{}]", file,
                 view.name, fmt::join(view.shape, ", "));
  const int64_t rows = view.shape[0], cols = view.shape[1];
  const std::string base = view.name.substr(0, view.name.size() - std::string(".weight").size());
  const TensorView* ws = lookup(base + ".weight_scale");
  RELAYLLM_CHECK(ws != nullptr, "{}: FP8 tensor {} has no {}.weight_scale", file, view.name, base);
  RELAYLLM_CHECK(ws->dtype != SafetensorsDType::kOther,
                 "{}: tensor {} has dtype {}, expected F32, BF16 or F16", file_of(*ws), ws->name,
                 ws->dtype_name);
  const int64_t want = scheme.per_channel ? rows : 1;
  RELAYLLM_CHECK(ws->numel() == want &&
                     (ws->shape.size() <= 1 || (ws->shape.size() == 2 && ws->shape[1] == 1)),
                 "{}: tensor {} has shape [{}], expected {} (weights.strategy {})", file_of(*ws),
                 ws->name, fmt::join(ws->shape, ", "),
                 scheme.per_channel ? fmt::format("[{}, 1]", rows) : std::string("[1] or []"),
                 scheme.per_channel ? "channel" : "tensor");
  const std::vector<float> scales = scale_values(*ws);
  for (float s : scales)
    RELAYLLM_CHECK(std::isfinite(s) && s > 0, "{}: tensor {} holds scale {}, expected > 0",
                   file_of(*ws), ws->name, s);
  float input_scale = 0;
  if (scheme.static_input) {
    const TensorView* is = lookup(base + ".input_scale");
    RELAYLLM_CHECK(is != nullptr, "{}: FP8 tensor {} has no {}.input_scale (static activations)",
                   file, view.name, base);
    RELAYLLM_CHECK(is->dtype != SafetensorsDType::kOther && is->numel() == 1,
                   "{}: tensor {} must be one F32, BF16 or F16 value, is {} of shape [{}]",
                   file_of(*is), is->name, is->dtype_name, fmt::join(is->shape, ", "));
    input_scale = scale_values(*is)[0];
    RELAYLLM_CHECK(std::isfinite(input_scale) && input_scale > 0,
                   "{}: tensor {} holds {}, expected > 0", file_of(*is), is->name, input_scale);
  }
  const auto* codes = reinterpret_cast<const uint8_t*>(view.bytes.data());
  out.shape = {rows, cols};
  if (keep_fp8 && cols % kFp8ColumnMultiple == 0) {
    out.format = WeightFormat::kFP8;
    out.blocks = pack_fp8_weight(std::span<const uint8_t>(codes, view.bytes.size()), scales, rows,
                                 cols, input_scale);
    return;
  }
  // A backend without FP8 GEMMs computes with the dequantized weight.
  out.data.resize(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float s = scales[scales.size() == 1 ? 0 : size_t(r)];
    for (int64_t c = 0; c < cols; ++c)
      out.data[size_t(r * cols + c)] = s * e4m3_to_float(codes[r * cols + c]);
  }
}

}  // namespace relayllm
