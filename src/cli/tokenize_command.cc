#include "tokenize_command.h"

#include <fmt/format.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

namespace relayllm {

int run_tokenize(const Tokenizer& tokenizer, bool add_special_tokens, std::istream& in,
                 std::ostream& out) {
  std::string line;
  size_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json request;
    try {
      request = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      std::cerr << fmt::format("tokenize: input line {}: invalid JSON: {}\n", line_number,
                               e.what());
      return 2;
    }
    if (!request.is_object() || !request.contains("text") || !request["text"].is_string()) {
      std::cerr << fmt::format(
          "tokenize: input line {}: expected an object with a string field \"text\"\n",
          line_number);
      return 2;
    }
    nlohmann::json reply = {
        {"ids", tokenizer.encode(request["text"].get<std::string>(), add_special_tokens)}};
    out << reply.dump() << '\n';
  }
  out.flush();
  return 0;
}

}  // namespace relayllm
