// POST /v1/completions and /v1/chat/completions: the parsed request's fan-out of
// n choices to engine requests, and the whole or streamed (SSE) responses. The
// parsing itself is serving/request_parser.h.
#include <spdlog/spdlog.h>

#include <random>

#include "relayllm/common/error.h"
#include "relayllm/common/json_fields.h"
#include "relayllm/common/json_line.h"
#include "relayllm/server/api_error.h"
#include "relayllm/server/openai_protocol.h"
#include "relayllm/server/openai_server.h"
#include "relayllm/server/server_state.h"
#include "relayllm/tools/tool_call_parser.h"

namespace relayllm {
namespace {

struct ChoiceState {
  size_t prompt_index = 0;
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<TokenLogprobs> logprobs;
  std::vector<PromptLogprob> prompt_logprobs;
  bool finished = false;
  std::string finish_reason;
  std::optional<std::string> stop_reason;
  int32_t num_cached_tokens = 0;    // of the prompt, from the prefix cache or a relay prefix
  int32_t relay_prefix_tokens = 0;  // of the context, read through relay groups
  bool first_chunk_sent = false;
  size_t text_offset = 0;                           // streamed completions' logprobs offsets
  std::unique_ptr<ToolCallStreamer> tool_streamer;  // streamed chat with tool parsing
  std::vector<std::string> tool_call_ids;           // of the calls streamed so far
};

nlohmann::json or_null(const std::optional<std::string>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

// OpenAI's ids are "call_" and 24 letters and digits; Mistral's templates take back only
// ids of exactly 9 (vLLM gives those with its mistral parser).
std::string new_tool_call_id(std::mt19937_64& rng, bool short_id) {
  static constexpr char kChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::uniform_int_distribution<size_t> pick(0, sizeof(kChars) - 2);
  std::string id = short_id ? "" : "call_";
  for (int k = 0; k < (short_id ? 9 : 24); ++k) id += kChars[pick(rng)];
  return id;
}

std::string sse(const nlohmann::json& j) { return "data: " + json_line(j) + "\n\n"; }

// One HTTP request's choices on their way back. Lives on the connection's strand.
class Job : public std::enable_shared_from_this<Job> {
 public:
  bool chat = false;
  OutputOptions output;
  std::string id, model;
  int64_t created = 0;
  std::vector<PromptInput> prompts;
  std::vector<ChoiceState> choices;
  std::shared_ptr<HttpExchange> exchange;
  AsyncEngine* engine = nullptr;
  // Chat with tool_choice other than none: the format the output is read in.
  std::unique_ptr<ToolCallFormat> tool_format;
  bool parallel_tool_calls = true;
  bool short_call_ids = false;                  // Mistral's 9-character ids
  std::mt19937_64 rng{std::random_device{}()};  // tool-call ids

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
      if (++num_admitted_ == choices.size() && output.stream && !exchange->started())
        begin_stream();
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
      c.num_cached_tokens = u.num_cached_tokens;
      c.relay_prefix_tokens = u.relay_prefix_tokens;
      ++num_finished_;
    }
    if (output.stream) {
      if (!exchange->started()) begin_stream();
      emit_chunk(i, u);
      if (num_finished_ == choices.size()) end_stream();
    } else if (num_finished_ == choices.size()) {
      done_ = true;
      send_json(exchange, 200, whole_response());
    }
  }

  nlohmann::json chunk_base() const {
    return {{"id", id},
            {"object", chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created},
            {"model", model}};
  }

  void begin_stream() {
    exchange->start_stream(200, "text/event-stream");
    if (!chat) return;
    // The first delta of every choice carries the role, as OpenAI streams do.
    for (size_t i = 0; i < choices.size(); ++i) {
      nlohmann::json chunk = chunk_base();
      chunk["choices"] =
          nlohmann::json::array({{{"index", i},
                                  {"delta", {{"role", "assistant"}, {"content", ""}}},
                                  {"logprobs", nullptr},
                                  {"finish_reason", nullptr}}});
      if (output.continuous_usage) chunk["usage"] = usage();
      exchange->write(sse(chunk));
    }
  }

  void emit_chunk(size_t i, const RequestUpdate& u) {
    ChoiceState& c = choices[i];
    std::string text = u.text;
    if (!chat && output.echo && !c.first_chunk_sent) text = prompts[c.prompt_index].text + text;
    c.first_chunk_sent = true;
    if (text.empty() && u.logprobs.empty() && !u.finished) return;
    const Tokenizer& tokenizer = engine->tokenizer();
    nlohmann::json choice = {{"index", i}};
    nlohmann::json logprobs = nullptr;
    if (output.logprobs) {
      if (chat) {
        nlohmann::json content = nlohmann::json::array();
        for (const auto& e : u.logprobs)
          content.push_back(chat_logprob_entry(tokenizer, e, output.top_logprobs));
        logprobs = {{"content", std::move(content)}};
      } else {
        CompletionLogprobs lp(c.text_offset);
        for (const auto& e : u.logprobs) lp.add(tokenizer, e);
        c.text_offset = lp.offset();
        logprobs = lp.to_json();
      }
    }
    if (chat && c.tool_streamer) {
      ToolStreamDelta d = c.tool_streamer->push(text);
      if (u.finished) {
        ToolStreamDelta rest = c.tool_streamer->finish();
        d.content += rest.content;
        for (ToolCallDelta& call : rest.calls) d.calls.push_back(std::move(call));
      }
      if (d.empty() && u.logprobs.empty() && !u.finished) return;
      choice["delta"] = tool_delta_json(c, d);
    } else if (chat) {
      choice["delta"] =
          u.finished && text.empty() ? nlohmann::json::object() : nlohmann::json{{"content", text}};
    } else {
      choice["text"] = text;
    }
    choice["logprobs"] = std::move(logprobs);
    choice["finish_reason"] =
        u.finished
            ? nlohmann::json(finish_reason(c, c.tool_streamer && c.tool_streamer->calls_sent()))
            : nlohmann::json(nullptr);
    choice["stop_reason"] = u.finished ? or_null(c.stop_reason) : nlohmann::json(nullptr);
    nlohmann::json chunk = chunk_base();
    chunk["choices"] = nlohmann::json::array({std::move(choice)});
    if (output.continuous_usage) chunk["usage"] = usage();
    exchange->write(sse(chunk));
  }

  // A streamed delta with tool calls as OpenAI shapes them: the first piece of a call
  // has index, id, type and name; later ones index and an arguments fragment.
  nlohmann::json tool_delta_json(ChoiceState& c, const ToolStreamDelta& d) {
    nlohmann::json delta = nlohmann::json::object();
    if (!d.content.empty()) delta["content"] = d.content;
    if (d.calls.empty()) return delta;
    nlohmann::json calls = nlohmann::json::array();
    for (const ToolCallDelta& call : d.calls) {
      if (call.first) {
        c.tool_call_ids.push_back(new_tool_call_id(rng, short_call_ids));
        calls.push_back({{"index", call.index},
                         {"id", c.tool_call_ids.back()},
                         {"type", "function"},
                         {"function", {{"name", call.name}, {"arguments", call.arguments}}}});
      } else {
        calls.push_back({{"index", call.index}, {"function", {{"arguments", call.arguments}}}});
      }
    }
    delta["tool_calls"] = std::move(calls);
    return delta;
  }

  // "tool_calls" when calls came out of an output that ended normally.
  static std::string finish_reason(const ChoiceState& c, bool called) {
    return called && c.finish_reason == "stop" ? "tool_calls" : c.finish_reason;
  }

  void end_stream() {
    done_ = true;
    if (output.include_usage) {
      nlohmann::json chunk = chunk_base();
      chunk["choices"] = nlohmann::json::array();
      chunk["usage"] = usage();
      exchange->write(sse(chunk));
    }
    exchange->write("data: [DONE]\n\n");
    exchange->end_stream();
  }

  // Tokens so far; cached_tokens counts each prompt once (its first choice's count,
  // known when that choice finished), as prompt_tokens does. relay_prefix_tokens (ours, not
  // OpenAI's) sits beside it, counted the same way: the prompt tokens read through relay
  // groups, a registered prefix and automatic groups (`relayllm generate`'s number). It may
  // exceed cached_tokens: requests that arrive together share blocks none of them found cached.
  nlohmann::json usage() const {
    int64_t prompt = 0, completion = 0, cached = 0, relay = 0;
    for (const auto& p : prompts) prompt += int64_t(p.ids.size());
    std::vector<bool> counted(prompts.size(), false);
    for (const auto& c : choices) {
      completion += int64_t(c.tokens.size());
      if (c.finished && !counted[c.prompt_index]) {
        counted[c.prompt_index] = true;
        cached += c.num_cached_tokens;
        relay += c.relay_prefix_tokens;
      }
    }
    return {{"prompt_tokens", prompt},
            {"completion_tokens", completion},
            {"total_tokens", prompt + completion},
            {"prompt_tokens_details", {{"cached_tokens", cached}, {"relay_prefix_tokens", relay}}}};
  }

  nlohmann::json whole_response() {
    const Tokenizer& tokenizer = engine->tokenizer();
    nlohmann::json out_choices = nlohmann::json::array();
    for (size_t i = 0; i < choices.size(); ++i) {
      const ChoiceState& c = choices[i];
      const PromptInput& prompt = prompts[c.prompt_index];
      nlohmann::json choice = {{"index", i}};
      nlohmann::json logprobs = nullptr;
      std::string reason = c.finish_reason;
      if (chat && tool_format) {
        ToolCallOutput out = parse_tool_calls(*tool_format, c.text, parallel_tool_calls);
        nlohmann::json calls = nlohmann::json::array();
        for (ToolCall& call : out.calls)
          calls.push_back({{"id", new_tool_call_id(rng, short_call_ids)},
                           {"type", "function"},
                           {"function", {{"name", call.name}, {"arguments", call.arguments}}}});
        choice["message"] = {{"role", "assistant"},
                             {"content", out.content ? nlohmann::json(*out.content) : nullptr}};
        if (!calls.empty()) {
          choice["message"]["tool_calls"] = std::move(calls);
          reason = finish_reason(c, true);
        }
      } else if (chat) {
        choice["message"] = {{"role", "assistant"}, {"content", c.text}};
      }
      if (chat) {
        if (output.logprobs) {
          nlohmann::json content = nlohmann::json::array();
          for (const auto& e : c.logprobs)
            content.push_back(chat_logprob_entry(tokenizer, e, output.top_logprobs));
          logprobs = {{"content", std::move(content)}};
        }
      } else {
        choice["text"] = output.echo ? prompt.text + c.text : c.text;
        if (output.logprobs) {
          CompletionLogprobs lp;
          if (output.echo) {
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
      choice["finish_reason"] = reason;
      choice["stop_reason"] = or_null(c.stop_reason);
      if (output.prompt_logprobs)
        choice["prompt_logprobs"] = prompt_logprobs_json(tokenizer, c.prompt_logprobs);
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

// Tokens and logprob entries one choice may return.
int64_t response_entries(const SamplingParams& params, size_t prompt_len) {
  int64_t out = int64_t(params.max_tokens) * (1 + params.logprobs.value_or(0));
  if (params.prompt_logprobs) out += int64_t(prompt_len) * (1 + *params.prompt_logprobs);
  return out;
}

void check_response_size(int64_t entries, int64_t limit) {
  if (entries > limit)
    fail_api(400,
             "the response could hold {} tokens and logprob entries (n x max_tokens x "
             "(1 + logprobs), plus prompt logprobs, over all prompts); this server allows "
             "{} (--max-response-entries): lower n, max_tokens or logprobs",
             entries, limit);
}

}  // namespace

void OpenAiServer::handle_completions(const nlohmann::json& body, const Exchange& exchange,
                                      Ready& ready) {
  check_model(body, ready);
  start_job(parse_completion_request(body, request_context(ready)), exchange, ready);
}

void OpenAiServer::handle_chat(const nlohmann::ordered_json& body, const Exchange& exchange,
                               Ready& ready) {
  check_model(nlohmann::json(body), ready);
  start_job(parse_chat_request(body, request_context(ready)), exchange, ready);
}

void OpenAiServer::start_job(const ParsedRequest& parsed, const Exchange& exchange, Ready& ready) {
  AsyncEngine& engine = *ready.engine;
  auto job = std::make_shared<Job>();
  job->chat = parsed.chat;
  job->output = parsed.output;
  job->prompts = parsed.prompts;
  check_logprobs(parsed.params);
  std::vector<GenerationRequest> generation = parsed.engine_requests(engine.max_model_len());
  int64_t entries = 0;
  for (const GenerationRequest& r : generation)
    entries += response_entries(r.params, r.prompt_ids.size());
  check_response_size(entries, options_.max_response_entries);
  std::vector<EngineRequest> requests;
  for (GenerationRequest& r : generation) {
    requests.push_back({std::move(r), nullptr});
    ChoiceState c;
    c.prompt_index = (requests.size() - 1) / size_t(parsed.n);
    job->choices.push_back(std::move(c));
  }
  job->id = parsed.request_id.empty()
                ? next_id(parsed.chat ? "chatcmpl" : "cmpl")
                : fmt::format("{}-{}", parsed.chat ? "chatcmpl" : "cmpl", parsed.request_id);
  for (size_t p = 0; p < job->prompts.size(); ++p)
    log_request(job->prompts.size() == 1 ? job->id : fmt::format("{}-{}", job->id, p),
                job->prompts[p].text, job->prompts[p].ids,
                requests[p * size_t(parsed.n)].request.params);
  job->model = ready.model_name;
  job->created = int64_t(std::time(nullptr));
  job->exchange = exchange;
  job->engine = &engine;
  job->tool_format = parsed.tools.format(options_.tools);
  job->parallel_tool_calls = parsed.tools.parallel;
  // A server for Mistral models gives every call (forced ones too) ids its template takes.
  job->short_call_ids = job->tool_format &&
                        (job->tool_format->short_call_ids() || options_.tools.parser == "mistral");
  if (job->tool_format && job->output.stream)
    for (ChoiceState& c : job->choices)
      c.tool_streamer =
          std::make_unique<ToolCallStreamer>(*job->tool_format, job->parallel_tool_calls);
  job->start(std::move(requests));
}

}  // namespace relayllm
