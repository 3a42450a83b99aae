#include "llm_engine.h"

#include <fmt/format.h>
#include <pybind11/stl.h>

#include <exception>
#include <span>
#include <unordered_map>

#include "py_json.h"
#include "relayllm/chat/sys_schema.h"
#include "relayllm/common/error.h"
#include "relayllm/kv/block_pool.h"
#include "relayllm/serving/request_parser.h"

namespace py = pybind11;

namespace relayllm::python {
namespace {

template <typename T>
void read(const py::dict& options, const char* key, T& out) {
  if (!options.contains(key)) return;
  py::handle value = options[key];
  if (value.is_none()) return;
  try {
    out = value.cast<T>();
  } catch (const py::cast_error&) {
    throw py::type_error(fmt::format("{}: wrong type {}", key,
                                     std::string(py::str(py::type::of(value).attr("__name__")))));
  }
}

EngineOptions options_from_dict(const py::dict& options) {
  static const char* const kKnown[] = {"model",
                                       "tokenizer",
                                       "load_format",
                                       "seed",
                                       "device",
                                       "dtype",
                                       "num_threads",
                                       "gpu_memory_utilization",
                                       "block_size",
                                       "num_kv_blocks",
                                       "kv_cache_memory",
                                       "quantization",
                                       "max_model_len",
                                       "max_num_batched_tokens",
                                       "max_num_seqs",
                                       "enable_chunked_prefill",
                                       "enable_prefix_caching",
                                       "enable_relay_attention",
                                       "max_relay_prefix_kv_fraction",
                                       "sys_prompt",
                                       "sys_prompt_file",
                                       "sys_schema",
                                       "sys_schema_file",
                                       "relay_prefixes",
                                       "enforce_eager",
                                       "cuda_graph_max_batch",
                                       "default_model_venvs"};
  for (auto [key, value] : options) {
    std::string name = py::str(key);
    bool known = false;
    for (const char* k : kKnown) known = known || name == k;
    if (!known) throw py::value_error(fmt::format("unknown engine option '{}'", name));
  }
  EngineOptions o;
  EngineConfig& e = o.engine;
  read(options, "model", o.model);
  read(options, "tokenizer", o.tokenizer);
  read(options, "load_format", o.load_format);
  read(options, "seed", o.seed);
  read(options, "device", o.device);
  read(options, "dtype", o.dtype);
  read(options, "num_threads", o.num_threads);
  read(options, "gpu_memory_utilization", o.gpu_memory_utilization);
  read(options, "block_size", e.block_size);
  read(options, "num_kv_blocks", e.num_kv_blocks);
  double kv_gib = 0;
  read(options, "kv_cache_memory", kv_gib);
  if (kv_gib > 0) {
    e.kv_cache_bytes = size_t(kv_gib * double(size_t(1) << 30));
    o.kv_cache_memory_given = true;
  }
  read(options, "quantization", o.quantization);
  read(options, "max_model_len", e.max_model_len);
  read(options, "max_num_batched_tokens", e.scheduler.max_num_batched_tokens);
  read(options, "max_num_seqs", e.scheduler.max_num_seqs);
  read(options, "enable_chunked_prefill", e.scheduler.enable_chunked_prefill);
  read(options, "enable_prefix_caching", e.scheduler.enable_prefix_caching);
  read(options, "enable_relay_attention", e.enable_relay_attention);
  read(options, "max_relay_prefix_kv_fraction", e.max_prefix_kv_fraction);
  read(options, "enforce_eager", e.enforce_eager);
  read(options, "cuda_graph_max_batch", e.cuda_graph_max_batch);
  read(options, "sys_prompt", o.sys_prompt);
  read(options, "sys_prompt_file", o.sys_prompt_file);
  read(options, "sys_schema", o.sys_schema);
  read(options, "sys_schema_file", o.sys_schema_file);
  read(options, "relay_prefixes", o.relay_prefixes);
  read(options, "default_model_venvs", o.default_model_venvs);
  return o;
}

// One prompt of a batch as C++ holds it once converted from Python.
struct Input {
  std::optional<std::string> text;
  std::vector<int32_t> ids;
  const nlohmann::json* fields = nullptr;
  int32_t n = 1;
  int32_t auto_prefix_len = 0;
  bool complete = false;  // ids already hold the whole prompt (chat): no filled prefix
};

struct LogprobEntry {
  TokenLogprobs values;
  std::vector<std::string> decoded;  // chosen token first, then the top ones
};

struct Choice {
  std::string text;
  std::vector<int32_t> token_ids;
  std::string finish_reason;
  std::optional<std::string> stop_reason;
  std::optional<std::vector<LogprobEntry>> logprobs;
};

struct Result {
  std::vector<int32_t> prompt_ids;
  int32_t num_cached_tokens = 0;
  int32_t relay_prefix_tokens = 0;
  std::optional<std::vector<std::optional<LogprobEntry>>> prompt_logprobs;
  double queue_s = 0, ttft_s = 0, e2e_s = 0;
  std::vector<Choice> choices;
};

double seconds_between(Clock::time_point from, const std::optional<Clock::time_point>& to) {
  return to ? std::chrono::duration<double>(*to - from).count() : 0.0;
}

// Generated text may end inside a character when a request stops mid-way; replace, as the
// CLI's JSON output does, instead of failing the whole batch.
py::str utf8_str(const std::string& text) {
  PyObject* object = PyUnicode_DecodeUTF8(text.data(), Py_ssize_t(text.size()), "replace");
  if (!object) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(object);
}

LogprobEntry logprob_entry(const Tokenizer& tokenizer, const TokenLogprobs& values) {
  LogprobEntry entry{values, {}};
  auto decode_one = [&](int32_t id) { return tokenizer.decode(std::span(&id, 1), false); };
  entry.decoded.push_back(decode_one(values.token));
  for (const auto& [id, logprob] : values.top) entry.decoded.push_back(decode_one(id));
  return entry;
}

// {token_id: (logprob, rank, decoded)}: the top ones ranked 1.., the chosen one with its
// rank among them (or None when it is not among them, as its rank is not computed).
py::dict logprob_dict(const LogprobEntry& entry) {
  py::dict out;
  std::optional<int32_t> chosen_rank;
  for (size_t i = 0; i < entry.values.top.size(); ++i) {
    const auto& [id, logprob] = entry.values.top[i];
    out[py::int_(id)] = py::make_tuple(logprob, int32_t(i + 1), utf8_str(entry.decoded[i + 1]));
    if (id == entry.values.token) chosen_rank = int32_t(i + 1);
  }
  out[py::int_(entry.values.token)] = py::make_tuple(
      entry.values.logprob, chosen_rank ? py::object(py::int_(*chosen_rank)) : py::none(),
      utf8_str(entry.decoded[0]));
  return out;
}

py::dict result_dict(const Result& r) {
  py::dict out;
  out["prompt_token_ids"] = py::cast(r.prompt_ids);
  out["num_cached_tokens"] = r.num_cached_tokens;
  out["relay_prefix_tokens"] = r.relay_prefix_tokens;
  if (r.prompt_logprobs) {
    py::list list;
    for (const auto& entry : *r.prompt_logprobs)
      list.append(entry ? py::object(logprob_dict(*entry)) : py::none());
    out["prompt_logprobs"] = list;
  } else {
    out["prompt_logprobs"] = py::none();
  }
  out["metrics"] = py::make_tuple(r.queue_s, r.ttft_s, r.e2e_s);
  py::list choices;
  for (const Choice& c : r.choices) {
    py::dict choice;
    choice["text"] = utf8_str(c.text);
    choice["token_ids"] = py::cast(c.token_ids);
    choice["finish_reason"] = c.finish_reason;
    choice["stop_reason"] = c.stop_reason ? py::object(py::str(*c.stop_reason)) : py::none();
    if (c.logprobs) {
      py::list list;
      double cumulative = 0;
      for (const auto& entry : *c.logprobs) {
        list.append(logprob_dict(entry));
        cumulative += entry.values.logprob;
      }
      choice["logprobs"] = list;
      choice["cumulative_logprob"] = cumulative;
    } else {
      choice["logprobs"] = py::none();
      choice["cumulative_logprob"] = py::none();
    }
    choices.append(choice);
  }
  out["outputs"] = choices;
  return out;
}

}  // namespace

LlmEngine::LlmEngine(const py::dict& options) {
  EngineOptions engine_options = options_from_dict(options);
  py::gil_scoped_release release;
  serving_ = create_engine(engine_options);
  defaults_ = default_sampling_params(serving_.generation);
  std::string source = serving_.engine->tokenizer().chat_template();
  if (source.empty()) source = default_chat_template();
  try {
    chat_template_.emplace(source);
  } catch (const Error& e) {
    chat_template_error_ = e.what();
  }
}

LlmEngine::~LlmEngine() {
  // After shutdown() (at exit, from the atexit hook) there is nothing left to free, and the
  // interpreter may be finalizing: no GIL dance then.
  if (!serving_.engine) return;
  py::gil_scoped_release release;
  std::lock_guard lock(mutex_);
  serving_.engine.reset();
}

void LlmEngine::shutdown() {
  py::gil_scoped_release release;
  std::lock_guard lock(mutex_);
  serving_.engine.reset();
}

bool LlmEngine::alive() const {
  std::lock_guard lock(mutex_);
  return serving_.engine != nullptr;
}

Engine& LlmEngine::engine() {
  if (!serving_.engine) throw std::runtime_error("the LLM was shut down");
  return *serving_.engine;
}

std::vector<int32_t> LlmEngine::prompt_from_text(const std::string& text) const {
  if (filled_prefix_ && !serving_.sys_schema) {
    // fill_prefix_kv_cache(shared_prefix_toks=...): the prefix, then the text as it is.
    std::vector<int32_t> ids = *filled_prefix_;
    std::vector<int32_t> own = serving_.engine->tokenizer().encode(text, false);
    ids.insert(ids.end(), own.begin(), own.end());
    return ids;
  }
  return serving_.encode_prompt(text);
}

py::list LlmEngine::generate(const py::list& requests, const py::object& progress) {
  // Convert with the GIL held; a sampling dict shared by many prompts is converted once.
  std::vector<Input> inputs;
  inputs.reserve(requests.size());
  std::unordered_map<PyObject*, nlohmann::json> fields_by_object;
  static const nlohmann::json kNoFields = nlohmann::json::object();
  for (size_t i = 0; i < requests.size(); ++i) {
    py::tuple t = requests[i].cast<py::tuple>();
    Input in;
    if (!t[0].is_none()) in.text = t[0].cast<std::string>();
    if (!t[1].is_none()) in.ids = t[1].cast<std::vector<int32_t>>();
    in.fields = &kNoFields;
    if (!t[2].is_none()) {
      auto [it, inserted] = fields_by_object.try_emplace(t[2].ptr());
      if (inserted) it->second = to_json(t[2], "sampling_params");
      in.fields = &it->second;
    }
    in.n = t[3].cast<int32_t>();
    in.auto_prefix_len = t[4].cast<int32_t>();
    in.complete = t[5].cast<bool>();
    inputs.push_back(std::move(in));
  }

  std::vector<Result> results(inputs.size());
  std::vector<std::string> errors;
  bool interrupted = false;
  {
    py::gil_scoped_release release;
    std::lock_guard lock(mutex_);
    Engine& eng = engine();
    // With a context, the fields a JSONL line of `relayllm generate` takes are all read here
    // too: structured outputs (guided_*, response_format), logit_bias, allowed_token_ids and
    // bad_words.
    RequestContext context;
    context.tokenizer = &eng.tokenizer();
    context.defaults = defaults_;
    context.vocab_size = int32_t(eng.model_config().vocab_size);
    context.grammar_compiler = serving_.grammar_compiler.get();
    // (prompt index, choice) of each engine request, in the order added.
    std::vector<std::pair<size_t, int32_t>> owners;
    std::vector<int64_t> ids;
    auto drop_all = [&] {
      for (int64_t id : ids) eng.release(id);  // aborts the unfinished: their blocks return
    };
    try {
      for (size_t i = 0; i < inputs.size(); ++i) {
        Input& in = inputs[i];
        try {
          std::vector<int32_t> prompt;
          if (in.text) {
            prompt = prompt_from_text(*in.text);
          } else if (filled_prefix_ && !in.complete) {
            prompt = *filled_prefix_;
            prompt.insert(prompt.end(), in.ids.begin(), in.ids.end());
          } else {
            prompt = std::move(in.ids);
          }
          GenerationRequest request =
              parse_generation_request(std::move(prompt), *in.fields, defaults_, &context);
          if (in.auto_prefix_len > 0 && eng.config().enable_relay_attention &&
              request.relay_prefix.empty())
            eng.relay_prefixes().use_automatic(
                std::span<const int32_t>(request.prompt_ids).first(size_t(in.auto_prefix_len)));
          for (int32_t k = 0; k < in.n; ++k) {
            SamplingParams params = request.params;
            if (k > 0 && params.seed) params.seed = *params.seed + uint64_t(k);
            std::vector<int32_t> copy = request.prompt_ids;
            ids.push_back(eng.add_request(std::move(copy), params, request.relay_prefix));
            owners.emplace_back(i, k);
          }
        } catch (const Error& e) {
          throw py::value_error(fmt::format("prompt {}: {}", i, e.what()));
        }
      }

      size_t done = 0, reported = 0;
      std::unordered_map<int64_t, bool> ours;
      while (eng.has_unfinished()) {
        for (const RequestOutput& out : eng.step())
          if (out.finished) ++done;
        // Back in Python for a moment each step: Ctrl-C (the signal handler only runs
        // there) and the progress bar.
        py::gil_scoped_acquire acquire;
        if (PyErr_CheckSignals() != 0) {
          interrupted = true;  // the error stays set until rethrown below
          break;
        }
        if (!progress.is_none() && done != reported) {
          try {
            progress(done - reported);
          } catch (py::error_already_set& e) {
            e.restore();
            interrupted = true;
            break;
          }
          reported = done;
        }
      }
      if (interrupted) {
        drop_all();
      } else {
        const Tokenizer& tokenizer = eng.tokenizer();
        for (size_t r = 0; r < ids.size(); ++r) {
          const Sequence& seq = *eng.find(ids[r]);
          auto [i, k] = owners[r];
          Result& result = results[i];
          if (k == 0) {
            result.prompt_ids = seq.prompt_ids;
            result.num_cached_tokens = seq.num_prefix_cache_hit_tokens;
            result.relay_prefix_tokens = seq.prefix_len;
            result.queue_s = seconds_between(seq.arrival_time, seq.first_scheduled_time);
            result.ttft_s = seconds_between(seq.arrival_time, seq.first_token_time);
            result.e2e_s = seconds_between(seq.arrival_time, seq.finish_time);
            if (seq.params.prompt_logprobs) {
              result.prompt_logprobs.emplace();
              for (const auto& entry : seq.prompt_logprobs)
                result.prompt_logprobs->push_back(
                    entry ? std::optional(logprob_entry(tokenizer, *entry)) : std::nullopt);
            }
          }
          if (seq.finish_reason == "error")
            errors.push_back(fmt::format("prompt {}: {}", i, seq.error_message));
          Choice choice{seq.text, seq.output_ids, seq.finish_reason, seq.stop_reason, std::nullopt};
          if (seq.params.logprobs) {
            choice.logprobs.emplace();
            for (const auto& entry : seq.logprobs)
              choice.logprobs->push_back(logprob_entry(tokenizer, entry));
          }
          result.choices.push_back(std::move(choice));
        }
        drop_all();
      }
    } catch (...) {
      drop_all();
      throw;
    }
  }
  if (interrupted) throw py::error_already_set();
  if (!errors.empty()) throw std::runtime_error(errors.front());
  py::list out;
  for (const Result& r : results) out.append(result_dict(r));
  return out;
}

std::vector<int32_t> LlmEngine::encode(const std::string& text, bool add_special_tokens) {
  py::gil_scoped_release release;
  std::lock_guard lock(mutex_);
  return engine().tokenizer().encode(text, add_special_tokens);
}

std::vector<int32_t> LlmEngine::encode_prompt(const std::string& text) {
  py::gil_scoped_release release;
  std::lock_guard lock(mutex_);
  engine();
  return prompt_from_text(text);
}

std::string LlmEngine::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) {
  py::gil_scoped_release release;
  std::lock_guard lock(mutex_);
  const Tokenizer& tokenizer = engine().tokenizer();
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= tokenizer.vocab_size())
      throw py::value_error(fmt::format("token_ids[{}] = {} is outside the vocabulary (size {})", i,
                                        ids[i], tokenizer.vocab_size()));
  return tokenizer.decode(ids, skip_special_tokens);
}

namespace {

// A chat call's request context: the call's own template `override_source` when it is not
// empty (built into `custom`, which must outlive the context), else the model's.
RequestContext chat_context(const Engine& engine, const std::optional<ChatTemplate>& model_template,
                            const std::string& chat_template_error,
                            const std::string& override_source,
                            std::optional<ChatTemplate>& custom) {
  if (!override_source.empty()) custom.emplace(override_source);
  RequestContext context;
  context.tokenizer = &engine.tokenizer();
  context.vocab_size = engine.tokenizer().vocab_size();
  context.relay_enabled = engine.config().enable_relay_attention;
  context.chat_template = custom ? &*custom : (model_template ? &*model_template : nullptr);
  context.chat_template_error = chat_template_error;
  return context;
}

}  // namespace

std::string LlmEngine::render_chat(const py::handle& messages, bool add_generation_prompt,
                                   const std::string& chat_template, const py::handle& kwargs) {
  nlohmann::json messages_json = to_json(messages, "messages");
  nlohmann::json kwargs_json =
      kwargs.is_none() ? nlohmann::json::object() : to_json(kwargs, "chat_template_kwargs");
  py::gil_scoped_release release;
  std::lock_guard lock(mutex_);
  std::optional<ChatTemplate> custom;
  RequestContext context =
      chat_context(engine(), chat_template_, chat_template_error_, chat_template, custom);
  return relayllm::render_chat(context, normalize_messages(messages_json), add_generation_prompt,
                               kwargs_json);
}

std::tuple<std::vector<int32_t>, int32_t, std::string> LlmEngine::encode_chat(
    const py::handle& messages, bool add_generation_prompt, const std::string& chat_template,
    const py::handle& kwargs) {
  nlohmann::json body = nlohmann::json::object();
  body["messages"] = to_json(messages, "messages");
  body["add_generation_prompt"] = add_generation_prompt;
  if (!kwargs.is_none()) body["chat_template_kwargs"] = to_json(kwargs, "chat_template_kwargs");
  py::gil_scoped_release release;
  std::lock_guard lock(mutex_);
  std::optional<ChatTemplate> custom;
  RequestContext context =
      chat_context(engine(), chat_template_, chat_template_error_, chat_template, custom);
  context.defaults = defaults_;
  ParsedRequest parsed = parse_chat_request(body, context);
  return {std::move(parsed.prompts.at(0).ids), parsed.auto_prefix_len,
          std::move(parsed.prompts.at(0).text)};
}

int32_t LlmEngine::fill_prefix(const std::optional<std::string>& text,
                               const std::optional<std::vector<int32_t>>& ids) {
  py::gil_scoped_release release;
  std::lock_guard lock(mutex_);
  Engine& eng = engine();
  std::vector<int32_t> prefix;
  if (text) {
    std::string schema = serving_.sys_schema_text.empty() ? std::string(kDefaultSysSchema)
                                                          : serving_.sys_schema_text;
    serving_.sys_schema.emplace(schema, *text, serving_.sys_schema_from_chat_template);
    serving_.sys_schema_text = schema;
    prefix = serving_.sys_schema->prefix_ids(eng.tokenizer());
  } else if (ids) {
    prefix = *ids;
    serving_.sys_schema.reset();
  } else {
    // vllm-ra's form without arguments: the prefix of sys_prompt/sys_schema, computed
    // when the engine was built.
    if (!serving_.sys_schema) return 0;
    prefix = serving_.sys_schema->prefix_ids(eng.tokenizer());
  }
  if (eng.config().enable_relay_attention && !prefix.empty()) {
    if (RelayPrefix* old = eng.relay_prefixes().find("system")) {
      if (old->tokens == prefix) {
        filled_prefix_ = prefix;
        return int32_t(prefix.size());
      }
      eng.remove_prefix("system");
    }
    eng.register_prefix("system", prefix);
  }
  filled_prefix_ = prefix;
  return int32_t(prefix.size());
}

int32_t LlmEngine::register_prefix(const std::string& name, const std::vector<int32_t>& ids) {
  py::gil_scoped_release release;
  std::lock_guard lock(mutex_);
  Engine& eng = engine();
  if (!eng.config().enable_relay_attention)
    throw py::value_error("register_relay_prefix needs LLM(enable_relay_attention=True)");
  if (eng.relay_prefixes().find(name))
    throw py::value_error(fmt::format("a relay prefix named '{}' exists already", name));
  return int32_t(eng.register_prefix(name, ids).tokens.size());
}

void LlmEngine::remove_prefix(const std::string& name) {
  py::gil_scoped_release release;
  std::lock_guard lock(mutex_);
  Engine& eng = engine();
  if (!eng.relay_prefixes().find(name))
    throw py::key_error(fmt::format("no relay prefix named '{}'", name));
  eng.remove_prefix(name);
}

py::list LlmEngine::prefixes() {
  struct Row {
    std::string name;
    size_t tokens, blocks;
    bool automatic;
  };
  std::vector<Row> rows;
  {
    py::gil_scoped_release release;
    std::lock_guard lock(mutex_);
    for (const RelayPrefix* p : engine().prefixes())
      if (!p->removing) rows.push_back({p->name, p->tokens.size(), p->blocks.size(), p->automatic});
  }
  py::list out;
  for (const Row& row : rows) {
    py::dict d;
    d["name"] = row.name;
    d["num_tokens"] = row.tokens;
    d["num_blocks"] = row.blocks;
    d["automatic"] = row.automatic;
    out.append(d);
  }
  return out;
}

py::dict LlmEngine::stats() {
  nlohmann::json d;
  {
    py::gil_scoped_release release;
    std::lock_guard lock(mutex_);
    Engine& eng = engine();
    d["num_blocks"] = eng.block_pool().num_blocks();
    d["num_free_blocks"] = eng.block_pool().num_free();
    d["block_size"] = eng.block_pool().block_size();
    d["num_prefix_blocks"] = eng.num_prefix_blocks();
    d["num_running"] = eng.num_running();
    d["num_waiting"] = eng.num_waiting();
    d["steps"] = eng.stats().steps;
    d["prompt_tokens"] = eng.stats().prompt_tokens;
    d["generation_tokens"] = eng.stats().generation_tokens;
    d["relay_attached_requests"] = eng.stats().relay_attached_requests;
    d["relay_shared_tokens"] = eng.stats().relay_shared_tokens;
    d["num_preemptions"] = eng.scheduler_stats().num_preemptions;
    d["prefix_cache_hits"] = eng.scheduler_stats().prefix_cache_hits;
    d["prefix_cache_queries"] = eng.scheduler_stats().prefix_cache_queries;
  }
  return from_json(d).cast<py::dict>();
}

py::dict LlmEngine::info() {
  nlohmann::json d;
  {
    py::gil_scoped_release release;
    std::lock_guard lock(mutex_);
    Engine& eng = engine();
    d["model_name"] = serving_.model_name;
    d["random_weights"] = serving_.random_weights;
    d["vocab_size"] = eng.tokenizer().vocab_size();
    d["max_model_len"] = eng.config().max_model_len;
    d["enable_relay_attention"] = eng.config().enable_relay_attention;
    d["eos_token_ids"] = eng.eos_token_ids();
    d["sys_prefix"] = serving_.sys_schema ? nlohmann::json(serving_.sys_schema->prefix_text())
                                          : nlohmann::json(nullptr);
    d["has_chat_template"] = chat_template_.has_value();
  }
  return from_json(d).cast<py::dict>();
}

py::dict LlmEngine::default_sampling() {
  py::dict d;
  d["temperature"] = defaults_.temperature;
  d["top_p"] = defaults_.top_p;
  d["top_k"] = defaults_.top_k;
  d["repetition_penalty"] = defaults_.repetition_penalty;
  return d;
}

}  // namespace relayllm::python
