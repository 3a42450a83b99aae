#include "relayllm/server/openapi.h"

#include <cctype>
#include <string>

namespace relayllm {

nlohmann::json openapi_document(const std::string& version) {
  nlohmann::json paths = nlohmann::json::object();
  for (const RouteDoc& r : kRoutes) {
    std::string op_id = std::string(r.method) + std::string(r.path);
    for (char& c : op_id)
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    nlohmann::json op = {
        {"summary", r.summary},
        {"operationId", op_id},
        {"responses",
         {{"200", {{"description", "Success"}}},
          {"default",
           {{"description", "An error: {\"error\": {\"message\", \"type\", \"code\"}}"}}}}}};
    if (r.json_body)
      op["requestBody"] = {{"required", true},
                           {"content", {{"application/json", {{"schema", {{"type", "object"}}}}}}}};
    if (std::string(r.path).find("{name}") != std::string::npos)
      op["parameters"] = nlohmann::json::array({{{"name", "name"},
                                                 {"in", "path"},
                                                 {"required", true},
                                                 {"schema", {{"type", "string"}}}}});
    paths[r.path][r.method] = std::move(op);
  }
  return {{"openapi", "3.1.0"},
          {"info",
           {{"title", "relayllm"},
            {"version", version},
            {"description", "OpenAI-compatible LLM server with relay attention"}}},
          {"paths", std::move(paths)}};
}

std::string docs_page() {
  // Self-contained: the server may run where no outside script can be loaded.
  return R"(<!doctype html>
<html><head><meta charset="utf-8"><title>relayllm API</title>
<style>body{font-family:sans-serif;margin:2em}code{background:#eee;padding:0 .3em}
td{padding:.2em 1em .2em 0}</style></head>
<body><h1>relayllm API</h1><p>The machine-readable form is <a href="/openapi.json">/openapi.json</a>.</p>
<table id="routes"><tr><th>method</th><th>path</th><th>summary</th></tr></table>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const table = document.getElementById('routes');
  for (const [path, ops] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(ops)) {
      const row = table.insertRow();
      row.insertCell().textContent = method.toUpperCase();
      row.insertCell().innerHTML = '<code></code>';
      row.cells[1].firstChild.textContent = path;
      row.insertCell().textContent = op.summary;
    }
});
</script></body></html>
)";
}

}  // namespace relayllm
