// A Llama-family model from a GGUF file: the architecture from its metadata and the
// weights dequantized to fp32 under the HF names and layouts the forward expects.
// Tensor names follow llama.cpp (token_embd, blk.N.attn_q, ...). llama.cpp's converter
// permutes the rows of q/k projections of "llama" models (interleaved rope pairs); they
// are put back in HF order here. qwen2/qwen3 files are stored unpermuted.
#pragma once

#include <string>

#include "relayllm/formats/gguf_file.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"

namespace relayllm {

class ThreadPool;
struct ShardLayout;

// Throws Error naming the file and the metadata key for a missing or invalid field and
// for an unsupported architecture or rope scaling.
ModelConfig gguf_model_config(const GgufFile& file);

// Throws Error naming the file and tensor for a missing tensor, a wrong shape or a type
// that cannot be dequantized. Linear and embedding weights whose format `keep` accepts stay
// in their block format (HostTensor::blocks); the rest are dequantized to fp32.
// With `shard`, only this rank's rows (whole blocks) or columns are read; a row-parallel
// weight whose column cut splits a block is dequantized and cut (logged).
ModelWeights load_gguf_weights(const GgufFile& file, const ModelConfig& config,
                               ThreadPool* pool = nullptr, const WeightFormatFilter& keep = {},
                               const ShardLayout* shard = nullptr);

// The block format a ggml tensor type is kept in, kNone for F32 and types without one.
WeightFormat gguf_weight_format(GgmlType type);

// The llama.cpp name of a tensor given its HF name, e.g. "model.layers.3.mlp.up_proj.weight"
// -> "blk.3.ffn_up.weight". Throws Error for a name with no GGUF counterpart.
std::string gguf_tensor_name(const std::string& hf_name);

}  // namespace relayllm
