// The name a served model goes by (in /v1/models, responses and metric labels).
// Clients such as load generators and routers treat it as a Hugging Face name and
// look for a tokenizer folder under it, so an absolute path makes a poor id.
#pragma once

#include <filesystem>
#include <string>

namespace relayllm {

// The base name of a model folder ("/models/Llama-3-8B/" -> "Llama-3-8B"), or of a
// GGUF file without its extension and quantization tag
// ("SmolLM2-135M-Instruct.Q4_1.gguf" -> "SmolLM2-135M-Instruct"). `gguf_name` (the
// file's general.name) is the fallback when nothing is left of the file name.
std::string model_id_from_path(const std::filesystem::path& path,
                               const std::string& gguf_name = "");

}  // namespace relayllm
