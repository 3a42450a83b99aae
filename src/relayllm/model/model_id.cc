#include "relayllm/model/model_id.h"

#include <cctype>
#include <regex>

namespace relayllm {
namespace {

// ".Q4_1", "-Q4_K_M", ".IQ3_XS", "-f16", ".BF16", "-fp8": the quantization tags of GGUF file names.
const std::regex& quant_suffix() {
  static const std::regex re(R"([._-](i?q[0-9][0-9a-z_]*|f16|f32|bf16|fp16|fp32|fp8)$)",
                             std::regex::icase);
  return re;
}

}  // namespace

std::string model_id_from_path(const std::filesystem::path& path, const std::string& gguf_name) {
  std::filesystem::path p = path.lexically_normal();
  if (!p.empty() && !p.has_filename()) p = p.parent_path();  // "dir/" -> "dir"
  std::string base = p.filename().string();
  if (base == "." || base == "..") {
    std::error_code ec;
    base = std::filesystem::weakly_canonical(path, ec).filename().string();
  }
  std::string lower = base;
  for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  // By hand, not extension(): a file named only ".gguf" has no extension to std::filesystem.
  if (lower.size() >= 5 && lower.compare(lower.size() - 5, 5, ".gguf") == 0) {
    base = std::regex_replace(base.substr(0, base.size() - 5), quant_suffix(), "");
    if (base.empty()) base = gguf_name;
  }
  return base.empty() ? path.string() : base;
}

}  // namespace relayllm
