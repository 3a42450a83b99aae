// POST /v1/completions and /v1/chat/completions: request parsing, fan-out of
// n choices to engine requests, and the whole or streamed (SSE) responses.
#include <spdlog/spdlog.h>

#include "relayllm/common/error.h"
#include "relayllm/server/api_error.h"
#include "relayllm/server/openai_protocol.h"
#include "relayllm/server/openai_server.h"
#include "relayllm/server/server_state.h"

namespace relayllm {
namespace {

struct PromptInput {
  std::vector<int32_t> ids;
  std::string text;  // for echo
};

struct ChoiceState {
  size_t prompt_index = 0;
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<TokenLogprobs> logprobs;
  std::vector<PromptLogprob> prompt_logprobs;
  bool finished = false;
  std::string finish_reason;
  std::optional<std::string> stop_reason;
  bool first_chunk_sent = false;
  size_t text_offset = 0;  // streamed completions' logprobs offsets
};

nlohmann::json or_null(const std::optional<std::string>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

std::string sse(const nlohmann::json& j) {
  return "data: " + j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n\n";
}

// One HTTP request's choices on their way back. Lives on the connection's strand.
class Job : public std::enable_shared_from_this<Job> {
 public:
  bool chat = false;
  bool stream = false;
  bool include_usage = false;
  bool echo = false;
  bool want_logprobs = false;
  int32_t top_logprobs = 0;
  bool want_prompt_logprobs = false;
  std::string id, model;
  int64_t created = 0;
  std::vector<PromptInput> prompts;
  std::vector<ChoiceState> choices;
  std::shared_ptr<HttpExchange> exchange;
  AsyncEngine* engine = nullptr;

  // Callable from any thread: the job's state lives on the connection's strand.
  void start(std::vector<EngineRequest> requests) {
    exchange->post([self = shared_from_this(), requests = std::move(requests)]() mutable {
      self->start_here(std::move(requests));
    });
  }

 private:
  void start_here(std::vector<EngineRequest> requests) {
    if (exchange->closed()) return;  // the client left while the request was prepared
    std::weak_ptr<Job> weak = shared_from_this();
    for (size_t i = 0; i < requests.size(); ++i) {
      requests[i].sink = [self = shared_from_this(), i](RequestUpdate update) {
        auto ex = self->exchange;
        ex->post([self, i, u = std::move(update)]() mutable { self->on_update(i, std::move(u)); });
      };
    }
    try {
      handles_ = engine->submit(std::move(requests));
    } catch (const ApiError& e) {
      done_ = true;
      send_error(exchange, e.status(), e.what());
      return;
    }
    exchange->on_disconnect([weak] {
      if (auto self = weak.lock()) self->abort_all();
    });
  }

  void abort_all() {
    if (aborted_) return;
    aborted_ = true;
    for (uint64_t h : handles_) engine->abort(h);
  }

  void on_update(size_t i, RequestUpdate u) {
    if (done_) return;
    if (u.admitted) {
      // Once every choice is in the engine, none can be refused any more: only then
      // do the stream's headers go out, so that a refusal still gets its own status.
      if (++num_admitted_ == choices.size() && stream && !exchange->started()) begin_stream();
      return;
    }
    ChoiceState& c = choices[i];
    if (u.error_status) {
      done_ = true;
      abort_all();
      if (!exchange->started()) {
        send_error(exchange, *u.error_status, u.error_message);
      } else {
        exchange->write(sse(error_body(*u.error_status, u.error_message)));
        exchange->write("data: [DONE]\n\n");
        exchange->end_stream();
      }
      return;
    }
    c.text += u.text;
    c.tokens.insert(c.tokens.end(), u.token_ids.begin(), u.token_ids.end());
    c.logprobs.insert(c.logprobs.end(), u.logprobs.begin(), u.logprobs.end());
    if (u.finished) {
      c.finished = true;
      c.finish_reason = u.finish_reason;
      c.stop_reason = u.stop_reason;
      c.prompt_logprobs = std::move(u.prompt_logprobs);
      ++num_finished_;
    }
    if (stream) {
      if (!exchange->started()) begin_stream();
      emit_chunk(i, u);
      if (num_finished_ == choices.size()) end_stream();
    } else if (num_finished_ == choices.size()) {
      done_ = true;
      send_json(exchange, 200, whole_response());
    }
  }

  nlohmann::json chunk_base() const {
    return {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created}, {"model", model}};
  }

  void begin_stream() {
    exchange->start_stream(200, "text/event-stream");
    if (!chat) return;
    // The first delta of every choice carries the role, as OpenAI streams do.
    for (size_t i = 0; i < choices.size(); ++i) {
      nlohmann::json chunk = chunk_base();
      chunk["choices"] = nlohmann::json::array(
          {{{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}},
            {"logprobs", nullptr}, {"finish_reason", nullptr}}});
      exchange->write(sse(chunk));
    }
  }

  void emit_chunk(size_t i, const RequestUpdate& u) {
    ChoiceState& c = choices[i];
    std::string text = u.text;
    if (!chat && echo && !c.first_chunk_sent) text = prompts[c.prompt_index].text + text;
    c.first_chunk_sent = true;
    if (text.empty() && u.logprobs.empty() && !u.finished) return;
    const Tokenizer& tokenizer = engine->tokenizer();
    nlohmann::json choice = {{"index", i}};
    nlohmann::json logprobs = nullptr;
    if (want_logprobs) {
      if (chat) {
        nlohmann::json content = nlohmann::json::array();
        for (const auto& e : u.logprobs) content.push_back(chat_logprob_entry(tokenizer, e, top_logprobs));
        logprobs = {{"content", std::move(content)}};
      } else {
        CompletionLogprobs lp(c.text_offset);
        for (const auto& e : u.logprobs) lp.add(tokenizer, e);
        c.text_offset = lp.offset();
        logprobs = lp.to_json();
      }
    }
    if (chat) {
      choice["delta"] = u.finished && text.empty() ? nlohmann::json::object()
                                                   : nlohmann::json{{"content", text}};
    } else {
      choice["text"] = text;
    }
    choice["logprobs"] = std::move(logprobs);
    choice["finish_reason"] = u.finished ? nlohmann::json(c.finish_reason) : nlohmann::json(nullptr);
    choice["stop_reason"] = u.finished ? or_null(c.stop_reason) : nlohmann::json(nullptr);
    nlohmann::json chunk = chunk_base();
    chunk["choices"] = nlohmann::json::array({std::move(choice)});
    exchange->write(sse(chunk));
  }

  void end_stream() {
    done_ = true;
    if (include_usage) {
      nlohmann::json chunk = chunk_base();
      chunk["choices"] = nlohmann::json::array();
      chunk["usage"] = usage();
      exchange->write(sse(chunk));
    }
    exchange->write("data: [DONE]\n\n");
    exchange->end_stream();
  }

  nlohmann::json usage() const {
    int64_t prompt = 0, completion = 0;
    for (const auto& p : prompts) prompt += int64_t(p.ids.size());
    for (const auto& c : choices) completion += int64_t(c.tokens.size());
    return {{"prompt_tokens", prompt}, {"completion_tokens", completion},
            {"total_tokens", prompt + completion}};
  }

  nlohmann::json whole_response() const {
    const Tokenizer& tokenizer = engine->tokenizer();
    nlohmann::json out_choices = nlohmann::json::array();
    for (size_t i = 0; i < choices.size(); ++i) {
      const ChoiceState& c = choices[i];
      const PromptInput& prompt = prompts[c.prompt_index];
      nlohmann::json choice = {{"index", i}};
      nlohmann::json logprobs = nullptr;
      if (chat) {
        choice["message"] = {{"role", "assistant"}, {"content", c.text}};
        if (want_logprobs) {
          nlohmann::json content = nlohmann::json::array();
          for (const auto& e : c.logprobs) content.push_back(chat_logprob_entry(tokenizer, e, top_logprobs));
          logprobs = {{"content", std::move(content)}};
        }
      } else {
        choice["text"] = echo ? prompt.text + c.text : c.text;
        if (want_logprobs) {
          CompletionLogprobs lp;
          if (echo) {
            for (size_t k = 0; k < prompt.ids.size(); ++k) {
              if (k < c.prompt_logprobs.size() && c.prompt_logprobs[k])
                lp.add(tokenizer, *c.prompt_logprobs[k]);
              else
                lp.add_unscored(tokenizer, prompt.ids[k]);
            }
          }
          for (const auto& e : c.logprobs) lp.add(tokenizer, e);
          logprobs = lp.to_json();
        }
      }
      choice["logprobs"] = std::move(logprobs);
      choice["finish_reason"] = c.finish_reason;
      choice["stop_reason"] = or_null(c.stop_reason);
      if (want_prompt_logprobs) choice["prompt_logprobs"] = prompt_logprobs_json(tokenizer, c.prompt_logprobs);
      out_choices.push_back(std::move(choice));
    }
    return {{"id", id},
            {"object", chat ? "chat.completion" : "text_completion"},
            {"created", created},
            {"model", model},
            {"choices", std::move(out_choices)},
            {"usage", usage()}};
  }

  std::vector<uint64_t> handles_;
  size_t num_finished_ = 0;
  size_t num_admitted_ = 0;
  bool done_ = false;
  bool aborted_ = false;
};

void check_model(const nlohmann::json& body, const std::string& served) {
  auto model = read_string(body, "model");
  if (model && *model != served)
    fail_api(404, "the model '{}' does not exist; this server serves '{}'", *model, served);
}

// Caps or checks max_tokens against the context left after the prompt.
void fit_max_tokens(SamplingParams& params, size_t prompt_len, int32_t max_model_len,
                    bool explicit_max, bool default_to_rest) {
  const int64_t p = int64_t(prompt_len);
  if (p >= max_model_len)
    fail_api(400, "the prompt has {} tokens but this model's maximum context length is {} tokens",
             p, max_model_len);
  int64_t room = max_model_len - p;
  if (explicit_max) {
    if (params.max_tokens > room)
      fail_api(400, "this model's maximum context length is {} tokens, but {} tokens were requested "
                    "({} in the prompt, {} for the completion)",
               max_model_len, p + params.max_tokens, p, params.max_tokens);
  } else {
    params.max_tokens = default_to_rest ? int32_t(room) : int32_t(std::min<int64_t>(params.max_tokens, room));
    params.min_tokens = std::min(params.min_tokens, params.max_tokens);
  }
}

SamplingParams read_sampling(const nlohmann::json& body, const SamplingParams& defaults) {
  try {
    return sampling_params_from_json(body, defaults);
  } catch (const Error& e) {
    throw ApiError(400, e.what());
  }
}

int32_t read_n(const nlohmann::json& body, int32_t max_n) {
  int64_t n = read_int(body, "n").value_or(1);
  if (n < 1) fail_api(400, "field 'n' must be >= 1, got {}", n);
  if (n > max_n) fail_api(400, "field 'n' must be <= {}, got {}", max_n, n);
  return int32_t(n);
}

bool read_include_usage(const nlohmann::json& body) {
  auto it = body.find("stream_options");
  if (it == body.end() || it->is_null()) return false;
  if (!it->is_object()) fail_api(400, "field 'stream_options' must be an object, got {}", it->type_name());
  return read_bool(*it, "include_usage").value_or(false);
}

// Tokens and logprob entries one choice may return.
int64_t response_entries(const SamplingParams& params, size_t prompt_len) {
  int64_t out = int64_t(params.max_tokens) * (1 + params.logprobs.value_or(0));
  if (params.prompt_logprobs) out += int64_t(prompt_len) * (1 + *params.prompt_logprobs);
  return out;
}

void check_response_size(int64_t entries, int64_t limit) {
  if (entries > limit)
    fail_api(400, "the response could hold {} tokens and logprob entries (n x max_tokens x "
                  "(1 + logprobs), plus prompt logprobs, over all prompts); this server allows "
                  "{} (--max-response-entries): lower n, max_tokens or logprobs",
             entries, limit);
}

uint64_t fnv1a(const std::vector<int32_t>& ids) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t id : ids)
    for (int b = 0; b < 4; ++b) {
      h ^= (uint32_t(id) >> (8 * b)) & 0xff;
      h *= 1099511628211ull;
    }
  return h;
}

}  // namespace

void OpenAiServer::handle_completions(const nlohmann::json& body, const Exchange& exchange,
                                      Ready& ready) {
  check_model(body, ready.model_name);
  AsyncEngine& engine = *ready.engine;
  const int32_t vocab = engine.vocab_size();
  auto job = std::make_shared<Job>();
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) fail_api(400, "field 'prompt' is required");
  const nlohmann::json& prompt = *it;
  bool add_special = read_bool(body, "add_special_tokens").value_or(true);
  auto text_prompt = [&](const std::string& text) {
    if (text.empty()) fail_api(400, "field 'prompt' must not be an empty string");
    std::vector<int32_t> ids = engine.tokenizer().encode(text, add_special);
    job->prompts.push_back({std::move(ids), text});
  };
  auto id_prompt = [&](const nlohmann::json& ids, const std::string& field) {
    std::vector<int32_t> out = read_token_ids(ids, field, vocab);
    if (out.empty()) fail_api(400, "field '{}' must not be an empty list", field);
    std::string text = engine.tokenizer().decode(out, false);
    job->prompts.push_back({std::move(out), std::move(text)});
  };
  if (prompt.is_string()) {
    text_prompt(prompt.get<std::string>());
  } else if (prompt.is_array() && !prompt.empty() && prompt[0].is_number_integer()) {
    id_prompt(prompt, "prompt");
  } else if (prompt.is_array() && !prompt.empty()) {
    for (size_t i = 0; i < prompt.size(); ++i) {
      if (prompt[i].is_string())
        text_prompt(prompt[i].get<std::string>());
      else if (prompt[i].is_array())
        id_prompt(prompt[i], fmt::format("prompt[{}]", i));
      else
        fail_api(400, "field 'prompt[{}]' must be a string or a list of token ids, got {}", i,
                 prompt[i].type_name());
    }
  } else {
    fail_api(400, "field 'prompt' must be a non-empty string, list of strings, list of token ids "
                  "or list of token-id lists");
  }

  const int32_t n = read_n(body, options_.max_n);
  job->stream = read_bool(body, "stream").value_or(false);
  job->include_usage = job->stream && read_include_usage(body);
  job->echo = read_bool(body, "echo").value_or(false);
  auto relay_prefix = read_string(body, "relay_prefix");
  SamplingParams params = read_sampling(body, ready.defaults);
  bool explicit_max = body.contains("max_tokens") && !body["max_tokens"].is_null();
  job->want_logprobs = params.logprobs.has_value();
  job->top_logprobs = params.logprobs.value_or(0);
  job->want_prompt_logprobs = params.prompt_logprobs.has_value();
  if (job->echo && params.logprobs && !params.prompt_logprobs) params.prompt_logprobs = params.logprobs;

  std::vector<EngineRequest> requests;
  int64_t entries = 0;
  for (size_t p = 0; p < job->prompts.size(); ++p) {
    SamplingParams pp = params;
    fit_max_tokens(pp, job->prompts[p].ids.size(), engine.max_model_len(), explicit_max, false);
    entries += n * response_entries(pp, job->prompts[p].ids.size());
    check_response_size(entries, options_.max_response_entries);
    for (int32_t k = 0; k < n; ++k) {
      EngineRequest r;
      r.prompt_ids = job->prompts[p].ids;
      r.params = pp;
      if (pp.seed) r.params.seed = *pp.seed + uint64_t(k);
      if (relay_prefix) r.required_prefix = *relay_prefix;
      requests.push_back(std::move(r));
      ChoiceState c;
      c.prompt_index = p;
      job->choices.push_back(std::move(c));
    }
  }
  job->id = next_id("cmpl");
  job->model = ready.model_name;
  job->created = int64_t(std::time(nullptr));
  job->exchange = exchange;
  job->engine = &engine;
  job->start(std::move(requests));
}

void OpenAiServer::handle_chat(const nlohmann::json& body, const Exchange& exchange, Ready& ready) {
  check_model(body, ready.model_name);
  AsyncEngine& engine = *ready.engine;
  if (!body.contains("messages")) fail_api(400, "field 'messages' is required");
  nlohmann::json messages = normalize_messages(body["messages"]);
  bool add_generation_prompt = read_bool(body, "add_generation_prompt").value_or(true);
  nlohmann::json kwargs = body.contains("chat_template_kwargs") && !body["chat_template_kwargs"].is_null()
                              ? body["chat_template_kwargs"]
                              : nlohmann::json::object();
  std::string text = render_chat(ready, messages, add_generation_prompt, kwargs);

  auto job = std::make_shared<Job>();
  job->chat = true;
  std::vector<int32_t> ids = engine.tokenizer().encode(text, false);
  if (ids.empty()) fail_api(400, "the rendered conversation is empty");

  const int32_t n = read_n(body, options_.max_n);
  job->stream = read_bool(body, "stream").value_or(false);
  job->include_usage = job->stream && read_include_usage(body);
  bool logprobs = read_bool(body, "logprobs").value_or(false);
  auto top = read_int(body, "top_logprobs");
  if (top && (*top < 0 || *top > kMaxLogprobs))
    fail_api(400, "field 'top_logprobs' must be in [0, {}], got {}", kMaxLogprobs, *top);
  if (top && *top > 0 && !logprobs) fail_api(400, "field 'top_logprobs' needs 'logprobs': true");
  auto max_completion = read_int(body, "max_completion_tokens");
  auto max_tokens = read_int(body, "max_tokens");
  auto relay_prefix = read_string(body, "relay_prefix");

  nlohmann::json sampling = body;
  for (const char* key : {"logprobs", "top_logprobs", "max_tokens", "max_completion_tokens"})
    sampling.erase(key);
  SamplingParams params = read_sampling(sampling, ready.defaults);
  auto max = max_completion ? max_completion : max_tokens;
  if (max) {
    if (*max < 1) fail_api(400, "field 'max_tokens' must be >= 1, got {}", *max);
    params.max_tokens = int32_t(std::min<int64_t>(*max, INT32_MAX));
  }
  if (logprobs) params.logprobs = int32_t(top.value_or(0));
  params.validate();
  fit_max_tokens(params, ids.size(), engine.max_model_len(), max.has_value(), true);
  check_response_size(n * response_entries(params, ids.size()), options_.max_response_entries);
  job->want_logprobs = logprobs;
  job->top_logprobs = int32_t(top.value_or(0));
  job->want_prompt_logprobs = params.prompt_logprobs.has_value();

  // With relay on, the rendered system part becomes a shared prefix when it is
  // both a text prefix and a token prefix of the whole prompt (so attaching to
  // it never changes the tokens the request sees).
  std::string auto_name;
  int32_t auto_len = 0;
  if (engine.relay_enabled() && !relay_prefix && !params.prompt_logprobs &&
      messages[0]["role"] == "system" && messages.size() > 1) {
    try {
      std::string system_text =
          render_chat(ready, nlohmann::json::array({messages[0]}), false, kwargs);
      if (!system_text.empty() && text.compare(0, system_text.size(), system_text) == 0) {
        std::vector<int32_t> sys_ids = engine.tokenizer().encode(system_text, false);
        if (int32_t(sys_ids.size()) >= options_.min_auto_prefix_blocks * engine.block_size() &&
            sys_ids.size() < ids.size() && std::equal(sys_ids.begin(), sys_ids.end(), ids.begin())) {
          auto_name = fmt::format("chat-system-{:016x}", fnv1a(sys_ids));
          auto_len = int32_t(sys_ids.size());
        }
      }
    } catch (const std::exception& e) {
      spdlog::debug("chat system part not usable as a relay prefix: {}", e.what());
    }
  }

  job->prompts.push_back({ids, text});
  std::vector<EngineRequest> requests;
  for (int32_t k = 0; k < n; ++k) {
    EngineRequest r;
    r.prompt_ids = ids;
    r.params = params;
    if (params.seed) r.params.seed = *params.seed + uint64_t(k);
    if (relay_prefix) r.required_prefix = *relay_prefix;
    r.auto_prefix_name = auto_name;
    r.auto_prefix_len = auto_len;
    requests.push_back(std::move(r));
    job->choices.emplace_back();
  }
  job->id = next_id("chatcmpl");
  job->model = ready.model_name;
  job->created = int64_t(std::time(nullptr));
  job->exchange = exchange;
  job->engine = &engine;
  job->start(std::move(requests));
}

}  // namespace relayllm
