#include "relayllm/server/cors.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "relayllm/common/error.h"

namespace relayllm {
namespace {

bool contains(const std::vector<std::string>& list, const std::string& value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

std::string upper(std::string s) {
  for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

}  // namespace

CorsDecision apply_cors(const CorsOptions& o, const HttpRequest& request) {
  CorsDecision d;
  const std::string origin = request.header("origin");
  if (origin.empty()) return d;  // not a cross-origin request
  const bool any_origin = contains(o.allowed_origins, "*");
  const bool origin_ok = any_origin || contains(o.allowed_origins, origin);
  // With credentials, browsers refuse "*": the origin itself is echoed, as Starlette does.
  const bool echo_origin = !any_origin || o.allow_credentials;
  auto allow_origin = [&](HeaderList& h) {
    h.emplace_back("Access-Control-Allow-Origin", echo_origin ? origin : "*");
    if (echo_origin) h.emplace_back("Vary", "Origin");
    if (o.allow_credentials) h.emplace_back("Access-Control-Allow-Credentials", "true");
  };

  const std::string requested_method = request.header("access-control-request-method");
  if (request.method != "OPTIONS" || requested_method.empty()) {
    if (origin_ok) allow_origin(d.headers);
    return d;
  }

  d.preflight = true;
  std::vector<std::string> methods = o.allowed_methods;
  if (contains(methods, "*"))
    methods = {"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"};
  for (auto& m : methods) m = upper(m);
  std::vector<std::string> failures;
  if (!origin_ok) failures.push_back("origin");
  if (!contains(methods, upper(requested_method))) failures.push_back("method");
  const std::string requested_headers = request.header("access-control-request-headers");
  if (!contains(o.allowed_headers, "*")) {
    std::vector<std::string> allowed;
    for (const auto& h : o.allowed_headers) allowed.push_back(lower(h));
    size_t start = 0;
    while (start <= requested_headers.size()) {
      size_t comma = requested_headers.find(',', start);
      std::string h = lower(trim(requested_headers.substr(start, comma - start)));
      // Headers every browser may send are always allowed.
      if (!h.empty() && !contains(allowed, h) &&
          !contains({"accept", "accept-language", "content-language", "content-type"}, h)) {
        failures.push_back("headers");
        break;
      }
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  if (origin_ok) allow_origin(d.headers);  // a refused origin learns nothing
  d.headers.emplace_back("Access-Control-Allow-Methods", join(methods));
  d.headers.emplace_back("Access-Control-Max-Age", "600");
  if (contains(o.allowed_headers, "*")) {
    if (!requested_headers.empty())
      d.headers.emplace_back("Access-Control-Allow-Headers", requested_headers);
  } else {
    d.headers.emplace_back("Access-Control-Allow-Headers", join(o.allowed_headers));
  }
  if (!failures.empty()) {
    d.status = 400;
    d.body = "Disallowed CORS " + join(failures);
  } else {
    d.body = "OK";
  }
  return d;
}

std::vector<std::string> parse_json_list_flag(const std::string& value, const char* flag) {
  const std::string v = trim(value);
  if (v.empty() || v[0] != '[') return {v};
  nlohmann::json j = nlohmann::json::parse(v, nullptr, false);
  RELAYLLM_CHECK(!j.is_discarded() && j.is_array(),
                 "{} '{}': expected a JSON list of strings such as "
                 "'[\"*\"]'",
                 flag, value);
  std::vector<std::string> out;
  for (const auto& item : j) {
    RELAYLLM_CHECK(item.is_string(), "{} '{}': every item must be a string", flag, value);
    out.push_back(item.get<std::string>());
  }
  return out;
}

}  // namespace relayllm
