// The version `relayllm --version` and GET /version report.
#pragma once

namespace relayllm {

inline constexpr const char* kVersion = "0.1.0";

}  // namespace relayllm
