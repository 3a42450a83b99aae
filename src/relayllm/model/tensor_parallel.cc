#include "relayllm/model/tensor_parallel.h"

#include <algorithm>
#include <cstring>

#include "relayllm/common/error.h"
#include "relayllm/formats/gguf_dequant.h"
#include "relayllm/formats/gguf_file.h"

namespace relayllm {
namespace {

// The GGUF type whose blocks a weight format keeps (the loaders' inverse).
GgmlType ggml_type_of(WeightFormat format) {
  switch (format) {
    case WeightFormat::kF16:
      return GgmlType::kF16;
    case WeightFormat::kBF16:
      return GgmlType::kBF16;
    case WeightFormat::kQ8_0:
      return GgmlType::kQ8_0;
    case WeightFormat::kQ4_0:
      return GgmlType::kQ4_0;
    case WeightFormat::kQ4_1:
      return GgmlType::kQ4_1;
    case WeightFormat::kQ4_K:
      return GgmlType::kQ4_K;
    case WeightFormat::kQ5_K:
      return GgmlType::kQ5_K;
    case WeightFormat::kQ6_K:
      return GgmlType::kQ6_K;
    default:
      fail("weight format {} has no blocks", weight_format_name(format));
  }
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

}  // namespace

ShardLayout shard_layout(const ModelConfig& c, int rank, int size) {
  RELAYLLM_CHECK(size >= 1 && rank >= 0 && rank < size, "rank {} of a job of {} ranks", rank, size);
  ShardLayout s;
  s.rank = rank;
  s.size = size;
  s.total_heads = c.num_heads;
  s.total_kv_heads = c.num_kv_heads;
  RELAYLLM_CHECK(c.num_heads % size == 0,
                 "--tensor-parallel-size {} does not divide the model's {} attention heads "
                 "(num_attention_heads); use a size that divides it",
                 size, c.num_heads);
  if (c.num_kv_heads >= size) {
    RELAYLLM_CHECK(c.num_kv_heads % size == 0,
                   "--tensor-parallel-size {} does not divide the model's {} KV heads "
                   "(num_key_value_heads); use a size that divides it",
                   size, c.num_kv_heads);
  } else {
    RELAYLLM_CHECK(size % c.num_kv_heads == 0,
                   "--tensor-parallel-size {} is not a multiple of the model's {} KV heads "
                   "(num_key_value_heads): with fewer KV heads than ranks each KV head is "
                   "replicated on size / KV heads ranks",
                   size, c.num_kv_heads);
  }
  RELAYLLM_CHECK(c.intermediate_size % size == 0,
                 "--tensor-parallel-size {} does not divide the model's intermediate_size {}", size,
                 c.intermediate_size);
  s.num_heads = c.num_heads / size;
  s.first_head = rank * s.num_heads;
  if (c.num_kv_heads >= size) {
    s.num_kv_heads = c.num_kv_heads / size;
    s.first_kv_head = rank * s.num_kv_heads;
  } else {
    // The query heads of this rank all read one KV head (size is a multiple of the KV
    // heads, so a rank's heads never straddle two groups).
    s.num_kv_heads = 1;
    s.first_kv_head = s.first_head / (c.num_heads / c.num_kv_heads);
  }
  s.intermediate = c.intermediate_size / size;
  s.first_intermediate = rank * s.intermediate;
  return s;
}

WeightSlice weight_slice(const WeightSlot& slot, const ShardLayout& s) {
  if (!s.sharded()) return {};
  const std::string& n = slot.name;
  // Rows (or columns) [first * head_dim, (first + count) * head_dim) of a dimension that
  // holds `total` heads.
  auto heads = [](SliceAxis axis, int64_t dim, int64_t total, int64_t first, int64_t count) {
    const int64_t head_dim = dim / total;
    return WeightSlice{axis, first * head_dim, (first + count) * head_dim};
  };
  if (ends_with(n, "self_attn.q_proj.weight") || ends_with(n, "self_attn.q_proj.bias"))
    return heads(SliceAxis::kRows, slot.shape[0], s.total_heads, s.first_head, s.num_heads);
  if (ends_with(n, "self_attn.k_proj.weight") || ends_with(n, "self_attn.k_proj.bias") ||
      ends_with(n, "self_attn.v_proj.weight") || ends_with(n, "self_attn.v_proj.bias"))
    return heads(SliceAxis::kRows, slot.shape[0], s.total_kv_heads, s.first_kv_head,
                 s.num_kv_heads);
  if (ends_with(n, "self_attn.o_proj.weight"))
    return heads(SliceAxis::kCols, slot.shape[1], s.total_heads, s.first_head, s.num_heads);
  if (ends_with(n, "mlp.gate_proj.weight") || ends_with(n, "mlp.up_proj.weight"))
    return {SliceAxis::kRows, s.first_intermediate, s.first_intermediate + s.intermediate};
  if (ends_with(n, "mlp.down_proj.weight"))
    return {SliceAxis::kCols, s.first_intermediate, s.first_intermediate + s.intermediate};
  return {};  // norms (q/k norms are per head_dim, shared by all heads), embeddings, lm_head
}

std::vector<int64_t> sliced_shape(const std::vector<int64_t>& shape, const WeightSlice& slice) {
  std::vector<int64_t> out = shape;
  if (slice.axis == SliceAxis::kRows) out[0] = slice.end - slice.begin;
  if (slice.axis == SliceAxis::kCols) out[1] = slice.end - slice.begin;
  return out;
}

bool slice_keeps_blocks(const WeightSlice& slice, WeightFormat format) {
  if (slice.axis != SliceAxis::kCols || format == WeightFormat::kNone) return true;
  const int64_t block = weight_block_layout(format).block_elements;
  return slice.begin % block == 0 && slice.end % block == 0;
}

HostTensor slice_host_tensor(const HostTensor& full, const WeightSlice& slice) {
  if (slice.whole()) return full;
  HostTensor out;
  out.shape = sliced_shape(full.shape, slice);
  out.format = full.format;
  const int64_t rows = full.shape[0], cols = full.shape.size() > 1 ? full.shape[1] : 1;
  // Bytes per element run: fp32 values, or block bytes per block of values.
  auto copy = [&](const auto& src, auto& dst, int64_t unit_elems, int64_t unit_bytes) {
    using Elem = typename std::decay_t<decltype(src)>::value_type;
    const int64_t per_unit = unit_bytes / int64_t(sizeof(Elem));
    const int64_t row_units = cols / unit_elems;
    if (slice.axis == SliceAxis::kRows) {
      dst.assign(src.begin() + slice.begin * row_units * per_unit,
                 src.begin() + slice.end * row_units * per_unit);
      return;
    }
    const int64_t b = slice.begin / unit_elems, e = slice.end / unit_elems;
    dst.resize(size_t(rows * (e - b) * per_unit));
    for (int64_t r = 0; r < rows; ++r)
      std::copy(src.begin() + (r * row_units + b) * per_unit,
                src.begin() + (r * row_units + e) * per_unit, dst.begin() + r * (e - b) * per_unit);
  };
  if (full.format == WeightFormat::kNone) {
    copy(full.data, out.data, 1, int64_t(sizeof(float)));
  } else if (!slice_keeps_blocks(slice, full.format)) {
    // The cut splits blocks: this rank's columns in fp32 (the caller logs it).
    HostTensor values;
    values.shape = full.shape;
    values.data.resize(size_t(full.numel()));
    const WeightBlockLayout b = weight_block_layout(full.format);
    dequantize_blocks(ggml_type_of(full.format), full.blocks, 0,
                      size_t(full.numel() / b.block_elements), values.data.data());
    return slice_host_tensor(values, slice);
  } else {
    const WeightBlockLayout b = weight_block_layout(full.format);
    copy(full.blocks, out.blocks, b.block_elements, b.block_bytes);
  }
  return out;
}

}  // namespace relayllm
