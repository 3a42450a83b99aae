// API key checks for the server's protected routes.
#pragma once

#include <string>
#include <string_view>

namespace relayllm {

// Compares in time that depends only on the lengths, so response timing does
// not reveal how many leading characters of a guessed key were right.
bool constant_time_equal(std::string_view a, std::string_view b);

// True when `authorization` (the header's value) is "Bearer <api_key>", the scheme
// in any letter case.
// An empty api_key means the server has no key: everything is allowed.
bool authorized(const std::string& api_key, std::string_view authorization);

}  // namespace relayllm
