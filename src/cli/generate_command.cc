#include "generate_command.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>

#include "engine_flags.h"
#include "relayllm/common/error.h"
#include "relayllm/common/json_line.h"
#include "relayllm/serving/request_parser.h"
#include "request_json.h"
#include "tensor_parallel_command.h"

namespace relayllm {
namespace {

struct PromptInput {
  std::string text;  // when given as text
  std::optional<std::vector<int32_t>> token_ids;
  nlohmann::json fields;  // sampling overrides from a JSONL line
};

std::vector<PromptInput> read_prompts_file(const std::string& path) {
  std::ifstream in(path);
  RELAYLLM_CHECK(in.good(), "--prompts-file {}: cannot open the file", path);
  std::vector<PromptInput> prompts;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    RELAYLLM_CHECK(j.is_object(), "{}:{}: not a JSON object", path, line_no);
    PromptInput p;
    if (j.contains("prompt_token_ids")) {
      const auto& ids = j["prompt_token_ids"];
      RELAYLLM_CHECK(ids.is_array(), "{}:{}: prompt_token_ids must be a list of integers", path,
                     line_no);
      std::vector<int32_t> out;
      for (const auto& id : ids) {
        RELAYLLM_CHECK(id.is_number_integer(), "{}:{}: prompt_token_ids must be a list of integers",
                       path, line_no);
        out.push_back(id.get<int32_t>());
      }
      p.token_ids = std::move(out);
    } else {
      RELAYLLM_CHECK(j.contains("prompt") && j["prompt"].is_string(),
                     "{}:{}: needs \"prompt\" (a string) or \"prompt_token_ids\"", path, line_no);
      p.text = j["prompt"].get<std::string>();
    }
    j.erase("prompt");
    j.erase("prompt_token_ids");
    p.fields = std::move(j);
    prompts.push_back(std::move(p));
  }
  return prompts;
}

struct GenerateArgs {
  EngineOptions engine;
  SamplingFlags sampling;
  std::vector<std::string> prompts;
  std::string prompts_file;
  bool profile_ops = false;
};

int run_generate(GenerateArgs& args) {
  std::vector<PromptInput> inputs;
  for (const auto& text : args.prompts)
    inputs.push_back({text, std::nullopt, nlohmann::json::object()});
  if (!args.prompts_file.empty()) {
    auto from_file = read_prompts_file(args.prompts_file);
    inputs.insert(inputs.end(), from_file.begin(), from_file.end());
  }
  if (inputs.empty()) {
    inputs.push_back({"Hello, my name is", std::nullopt, nlohmann::json::object()});
    spdlog::info("no --prompt or --prompts-file: generating for \"{}\"", inputs[0].text);
  }

  if (args.profile_ops) args.engine.op_profile = std::make_shared<OpProfile>();
  ServingEngine serving = create_engine(args.engine);
  Engine& engine = *serving.engine;
  SamplingParams defaults = args.sampling.resolve(default_sampling_params(serving.generation));

  RequestContext context;
  context.tokenizer = &engine.tokenizer();
  context.defaults = defaults;
  context.vocab_size = int32_t(engine.model_config().vocab_size);
  context.grammar_compiler = serving.grammar_compiler.get();
  std::vector<nlohmann::json> results(inputs.size());
  std::vector<int64_t> ids(inputs.size(), -1);
  int failures = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    try {
      std::vector<int32_t> prompt =
          inputs[i].token_ids ? *inputs[i].token_ids : serving.encode_prompt(inputs[i].text);
      GenerationRequest request =
          parse_generation_request(std::move(prompt), inputs[i].fields, defaults, &context);
      ids[i] =
          engine.add_request(std::move(request.prompt_ids), request.params, request.relay_prefix);
    } catch (const Error& e) {
      results[i] = {{"index", i}, {"error", e.what()}};
      spdlog::error("prompt {}: {}", i, e.what());
      ++failures;
    }
  }

  auto start = std::chrono::steady_clock::now();
  auto last_report = start;
  size_t done = 0, total = inputs.size() - failures;
  while (engine.has_unfinished()) {
    for (const RequestOutput& out : engine.step())
      if (out.finished) ++done;
    auto now = std::chrono::steady_clock::now();
    if (now - last_report > std::chrono::seconds(5)) {
      spdlog::info("{}/{} requests done, {} running, {} waiting, {} tokens generated", done, total,
                   engine.num_running(), engine.num_waiting(), engine.stats().generation_tokens);
      last_report = now;
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const EngineStats& stats = engine.stats();
  const SchedulerStats& sched = engine.scheduler_stats();
  spdlog::info(
      "{} requests in {:.2f} s: {} prompt + {} generated tokens ({:.1f} tok/s), {} steps, "
      "{} preemptions, {} relay-attached requests, prefix cache hits {}/{} tokens",
      total, seconds, stats.prompt_tokens, stats.generation_tokens,
      double(stats.generation_tokens) / std::max(seconds, 1e-9), stats.steps, sched.num_preemptions,
      stats.relay_attached_requests, sched.prefix_cache_hits, sched.prefix_cache_queries);
  if (stats.steps > 0) {
    const double ms_per_step = 1e3 / double(stats.steps);
    spdlog::info(
        "step time: {:.3f} ms a step: planning {:.3f}, forward pass {:.3f}, sampling {:.3f}, "
        "committing {:.3f}",
        (stats.plan_seconds + stats.forward_seconds + stats.sample_seconds + stats.commit_seconds) *
            ms_per_step,
        stats.plan_seconds * ms_per_step, stats.forward_seconds * ms_per_step,
        stats.sample_seconds * ms_per_step, stats.commit_seconds * ms_per_step);
  }
  if (stats.grammar_masks > 0)
    spdlog::info(
        "grammar masks: {} filled, {:.1f} us each on the mask thread during forward passes, "
        "{:.2f} ms in all waited for after them",
        stats.grammar_masks, stats.grammar_mask_fill_seconds * 1e6 / double(stats.grammar_masks),
        stats.grammar_mask_wait_seconds * 1e3);
  if (stats.decode_steps > 0) {
    // One KV row: K and V of one token in every layer.
    const ModelConfig& mc = engine.model_config();
    const double row_bytes = 2.0 * double(mc.num_kv_heads * mc.head_dim * mc.num_layers) *
                             double(engine.kv_element_bytes());
    const double steps = double(stats.decode_steps);
    spdlog::info(
        "decode attention: {} steps, {:.0f} KV rows ({:.2f} MB) read per step, paged attention "
        "would read {:.0f} ({:.2f} MB); relay groups {} ({} automatic), deepest {}",
        stats.decode_steps, double(stats.decode_attention_kv_rows) / steps,
        double(stats.decode_attention_kv_rows) / steps * row_bytes / 1e6,
        double(stats.decode_paged_kv_rows) / steps,
        double(stats.decode_paged_kv_rows) / steps * row_bytes / 1e6, stats.relay_groups,
        stats.relay_auto_groups, stats.max_relay_depth);
  }

  for (size_t i = 0; i < inputs.size(); ++i) {
    if (ids[i] >= 0) {
      results[i] = finished_request_json(*engine.find(ids[i]));
      results[i]["index"] = i;
    }
    std::cout << json_line(results[i]) << "\n";
  }
  std::cout.flush();

  if (const auto& profile = args.engine.op_profile) {
    serving.engine.reset();  // its backend adds the ops of a step not yet collected
    for (StepKind kind : {StepKind::kPrefill, StepKind::kDecode})
      if (profile->steps(kind) > 0) std::cerr << "\n" << profile->table(kind);
    std::cerr.flush();
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

void add_generate_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd =
      app.add_subcommand("generate", "Generate completions for prompts; JSON lines on stdout");
  add_engine_flags(*cmd, args->engine);
  add_sampling_flags(*cmd, args->sampling);
  cmd->add_option("--prompt", args->prompts, "Prompt text (repeatable)");
  cmd->add_option("--prompts-file", args->prompts_file,
                  "JSONL: {\"prompt\": ...} or {\"prompt_token_ids\": [...]} plus sampling fields "
                  "and relay_prefix");
  cmd->add_flag("--profile-ops", args->profile_ops,
                "Time every op (device time on cuda) and print, on stderr at the end, a table per "
                "step kind: time, bytes, bandwidth and its fraction of the copy bandwidth, FLOP/s; "
                "steps run op by op (no CUDA graphs), so decode steps are slower than without it");
  cmd->callback([args, &exit_code] {
    exit_code = run_tensor_parallel(args->engine, [&] { return run_generate(*args); });
  });
}

}  // namespace relayllm
