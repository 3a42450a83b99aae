// Fuzzes the request path up to the engine: bytes from a client through the HTTP/1.1
// parser (with the server's limits), the body through the JSON parser, and the fields the
// API reads through its typed readers and the chat template the messages meet.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "fuzz_input.h"
#include "relayllm/chat/chat_template.h"
#include "relayllm/common/json_fields.h"
#include "relayllm/server/api_error.h"
#include "relayllm/server/json_body.h"
#include "relayllm/serving/request_parser.h"

namespace http = boost::beast::http;

namespace {

// The API answers bad fields with ApiError (a 4xx), bad values elsewhere with Error (a 400).
template <typename Fn>
void refused(Fn&& fn) {
  try {
    fn();
  } catch (const relayllm::ApiError&) {
  } catch (const relayllm::Error&) {
  }
}

void read_fields(const nlohmann::json& body) {
  for (const char* field : {"stream", "echo", "logprobs", "add_generation_prompt"})
    refused([&] { (void)relayllm::json_fields::get_bool(body, field); });
  for (const char* field : {"max_tokens", "n", "seed", "top_k", "top_logprobs"})
    refused([&] { (void)relayllm::json_fields::get_int(body, field); });
  for (const char* field : {"model", "prompt", "user"})
    refused([&] { (void)relayllm::json_fields::get_string(body, field); });
  if (body.contains("prompt"))
    refused([&] { (void)relayllm::read_token_ids(body["prompt"], "prompt", 1000); });
  if (body.contains("messages")) {
    static const relayllm::ChatTemplate kChat(relayllm::default_chat_template());
    relayllm::ChatTemplateOptions options;
    if (body.contains("chat_template_kwargs") && body["chat_template_kwargs"].is_object())
      options.extra = nlohmann::ordered_json(body["chat_template_kwargs"]);
    refused([&] { (void)kChat.render(body["messages"], options); });
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  http::request_parser<http::string_body> parser;
  parser.body_limit(8 << 20);  // HttpServerOptions' defaults
  parser.header_limit(64 * 1024);
  parser.eager(true);
  boost::beast::error_code ec;
  size_t used = 0;
  while (used < size && !parser.is_done()) {
    size_t n = parser.put(boost::asio::buffer(data + used, size - used), ec);
    if (ec == http::error::need_more) {
      ec = {};
      if (n == 0) break;
    }
    if (ec) return 0;
    used += n;
  }
  if (!parser.is_done()) {
    if (!parser.got_some()) return 0;  // put_eof() requires some input (Beast asserts it)
    parser.put_eof(ec);
    if (ec || !parser.is_done()) return 0;
  }
  const auto& message = parser.get();
  (void)message.target();
  (void)message.keep_alive();
  for (const auto& field : message) (void)field.value();
  try {
    nlohmann::json body = relayllm::parse_json_body(message.body(), relayllm::kDefaultMaxJsonDepth);
    if (body.is_object()) read_fields(body);
  } catch (const relayllm::Error&) {
  } catch (const relayllm::ApiError&) {
  }
  return 0;
}
