// The state OpenAiServer holds once its model is loaded; shared by its .cc files.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "relayllm/chat/chat_template.h"
#include "relayllm/server/async_engine.h"
#include "relayllm/server/openai_server.h"

namespace relayllm {

struct OpenAiServer::Ready {
  std::unique_ptr<AsyncEngine> engine;
  std::string model_name;
  SamplingParams defaults;
  std::optional<ChatTemplate> chat_template;  // none: the chat endpoint answers 400
  std::string chat_template_error;
  int64_t created = 0;
};

}  // namespace relayllm
