// Cross-origin resource sharing as vLLM configures it (--allowed-origins,
// --allowed-methods, --allowed-headers, --allow-credentials; Starlette's
// CORSMiddleware semantics): preflight OPTIONS requests are answered here, and
// every other response to a request with an Origin header carries the
// Access-Control-Allow-* headers it is entitled to.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "relayllm/server/http_server.h"

namespace relayllm {

struct CorsOptions {
  std::vector<std::string> allowed_origins = {"*"};
  std::vector<std::string> allowed_methods = {"*"};
  std::vector<std::string> allowed_headers = {"*"};
  bool allow_credentials = false;
};

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct CorsDecision {
  bool preflight = false;  // an OPTIONS preflight: answer it with `status` and `headers`, no route
  int status = 200;
  std::string body;    // for a refused preflight
  HeaderList headers;  // to add to the response
};

CorsDecision apply_cors(const CorsOptions& options, const HttpRequest& request);

// Reads a vLLM-style JSON list flag ('["*"]' or '["GET", "POST"]'); a bare word is a
// one-item list. Throws Error naming the flag on anything else.
std::vector<std::string> parse_json_list_flag(const std::string& value, const char* flag);

}  // namespace relayllm
