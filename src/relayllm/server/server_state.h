// The state OpenAiServer holds once its model is loaded; shared by its .cc files.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "relayllm/chat/chat_template.h"
#include "relayllm/server/async_engine.h"
#include "relayllm/server/openai_server.h"
#include "relayllm/server/stats_logger.h"

namespace relayllm {

struct OpenAiServer::Ready {
  std::unique_ptr<AsyncEngine> engine;
  std::string model_name;
  std::vector<std::string> model_names;  // model_name first, then the aliases
  CacheConfigInfo cache_info;
  SamplingParams defaults;
  std::optional<ChatTemplate> chat_template;  // none: the chat endpoint answers 400
  std::string chat_template_error;
  int64_t created = 0;
  // Declared after the engine so that it stops before the engine goes away.
  std::unique_ptr<StatsLogger> stats_logger;
};

}  // namespace relayllm
