// The one request parse: completions and chat bodies into prompts, sampling and
// output options; the fan-out into engine requests; the CLI's JSONL fields.
#include "relayllm/serving/request_parser.h"

#include <gtest/gtest.h>

#include <string>

#include "../common/temp_dir.h"
#include "relayllm/common/error.h"

namespace relayllm {
namespace {

using testing::error_of;

struct Context {
  Tokenizer tokenizer = Tokenizer::make_byte_tokenizer();
  ChatTemplate chat{
      "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
      "{% if add_generation_prompt %}<assistant>{% endif %}"};
  RequestContext context() {
    RequestContext c;
    c.tokenizer = &tokenizer;
    c.vocab_size = tokenizer.vocab_size();
    c.max_n = 4;
    c.relay_enabled = true;
    c.chat_template = &chat;
    return c;
  }
};

TEST(RequestParser, CompletionsFanOutPromptsAndChoicesWithSeedsAndFittedMaxTokens) {
  Context c;
  auto body = nlohmann::json::parse(R"({"prompt": ["ab", [1, 2, 3]], "n": 2, "seed": 7,
                                        "max_tokens": 100, "echo": true, "logprobs": 1})");
  ParsedRequest r = parse_completion_request(body, c.context());
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[1].ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_TRUE(r.output.echo && r.output.logprobs);
  EXPECT_EQ(r.params.prompt_logprobs, 1) << "echo with logprobs scores the prompt";
  std::vector<GenerationRequest> requests = r.engine_requests(200);
  ASSERT_EQ(requests.size(), 4u);
  EXPECT_EQ(requests[1].params.seed, 8u);
  EXPECT_EQ(requests[3].prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_NE(error_of([&] { r.engine_requests(50); }).find("maximum context length is 50"),
            std::string::npos);
  // Without max_tokens the default is capped to the room left.
  r = parse_completion_request(nlohmann::json::parse(R"({"prompt": [1, 2, 3]})"), c.context());
  EXPECT_EQ(r.engine_requests(10)[0].params.max_tokens, 7);
}

TEST(RequestParser, CompletionsRefuseBadFieldsNamingThem) {
  Context c;
  auto error = [&](const char* body) {
    return error_of([&] { parse_completion_request(nlohmann::json::parse(body), c.context()); });
  };
  EXPECT_NE(error(R"({})").find("field 'prompt' is required"), std::string::npos);
  EXPECT_NE(error(R"({"prompt": ""})").find("empty string"), std::string::npos);
  EXPECT_NE(error(R"({"prompt": [1, 999]})").find("prompt[1]"), std::string::npos);
  EXPECT_NE(error(R"({"prompt": "a", "n": 5})").find("field 'n' must be <= 4"), std::string::npos);
  EXPECT_NE(error(R"({"prompt": "a", "stream": 1})").find("field 'stream' must be a boolean"),
            std::string::npos);
  EXPECT_NE(error(R"({"prompt": "a", "top_p": 2})").find("top_p"), std::string::npos);
  Context off;
  RequestContext no_relay = off.context();
  no_relay.relay_enabled = false;
  EXPECT_NE(error_of([&] {
              parse_completion_request(
                  nlohmann::json::parse(R"({"prompt": "a", "relay_prefix": "x"})"), no_relay);
            }).find("--enable-relay-attention"),
            std::string::npos);
}

TEST(RequestParser, ChatUsesItsDialectAndFindsTheSystemPart) {
  Context c;
  auto body = nlohmann::json::parse(R"({"messages": [{"role": "system", "content": "Be brief."},
                                                     {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                        "logprobs": true, "top_logprobs": 3, "max_completion_tokens": 5})");
  ParsedRequest r = parse_chat_request(body, c.context());
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(r.prompts[0].text, "<system>Be brief.\n<user>hi\n<assistant>");
  EXPECT_EQ(r.params.logprobs, 3);
  EXPECT_EQ(r.params.max_tokens, 5);
  EXPECT_TRUE(r.explicit_max_tokens);
  EXPECT_EQ(r.output.top_logprobs, 3);
  EXPECT_EQ(r.auto_prefix_len, int32_t(std::string("<system>Be brief.\n").size()));
  // Without max tokens a chat request may use the whole context left.
  body.erase("max_completion_tokens");
  r = parse_chat_request(body, c.context());
  EXPECT_EQ(r.engine_requests(100)[0].params.max_tokens, 100 - int32_t(r.prompts[0].ids.size()));
  auto error = [&](const char* text) {
    return error_of([&] { parse_chat_request(nlohmann::json::parse(text), c.context()); });
  };
  EXPECT_NE(error(R"({"messages": [{"role": "user", "content": "a"}], "top_logprobs": 2})")
                .find("needs 'logprobs': true"),
            std::string::npos);
  EXPECT_NE(error(R"({"messages": [{"role": "user", "content": "a"}], "max_tokens": 0})")
                .find("field 'max_tokens' must be >= 1"),
            std::string::npos);
  EXPECT_NE(error(R"({"messages": [{"role": "robot", "content": "a"}]})").find("messages[0].role"),
            std::string::npos);
}

TEST(RequestParser, GenerationRequestReadsSamplingAndRelayPrefix) {
  GenerationRequest r = parse_generation_request(
      {5, 6}, nlohmann::json::parse(R"({"temperature": 0, "relay_prefix": "docs"})"), {});
  EXPECT_EQ(r.prompt_ids, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(r.params.temperature, 0.0f);
  EXPECT_EQ(r.relay_prefix, "docs");
  EXPECT_THROW(parse_generation_request({1}, nlohmann::json::parse(R"({"top_k": "2"})"), {}),
               Error);
}

}  // namespace
}  // namespace relayllm
