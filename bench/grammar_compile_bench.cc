// Grammar compile times of a typical tool schema against a real tokenizer: the one-time token
// table, cold compiles (each of a new schema text) and warm ones (the same text again: the
// compiler's cache), in wall time and in process CPU time (the machine may be shared, so CPU
// seconds say what the work costs where wall time says what a request waits).
//
//   grammar_compile_bench [--gguf FILE] [--variants N] [--threads T]
//
// Without --gguf the default model (SmolLM2-135M-Instruct) is looked up as `relayllm` does.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "relayllm/formats/gguf_file.h"
#include "relayllm/serving/default_model.h"
#include "relayllm/structured/grammar_compiler.h"
#include "relayllm/tokenizer/gguf_tokenizer.h"

namespace {

using namespace relayllm;

// tests/python/structured_schemas.py's TOOL_SCHEMA, with a variant number in a description so
// that every variant is a new cache key (and so a cold compile).
std::string tool_schema(int variant) {
  return R"j({"type": "object", "properties": {"location": {"type": "string", )j"
         R"j("description": "City and country, e.g. Paris, France (variant )j" +
         std::to_string(variant) +
         R"j()"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}, )j"
         R"j("days": {"type": "integer", "minimum": 1, "maximum": 14}, )j"
         R"j("include": {"type": "array", "items": {"enum": ["wind", "rain", "uv", "humidity"]}, )j"
         R"j("maxItems": 4}}, "required": ["location", "unit"]})j";
}

struct Clocks {
  double wall = 0, cpu = 0;
};

Clocks now() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);  // all threads of the process: xgrammar compiles on a pool
  const auto secs = [](timeval t) { return double(t.tv_sec) + double(t.tv_usec) * 1e-6; };
  return {
      std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(),
      secs(u.ru_utime) + secs(u.ru_stime)};
}

Clocks since(const Clocks& start) {
  Clocks end = now();
  return {(end.wall - start.wall) * 1e3, (end.cpu - start.cpu) * 1e3};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string gguf;
  int variants = 5, threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--gguf")) gguf = argv[i + 1];
    if (!std::strcmp(argv[i], "--variants")) variants = std::max(1, std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
  }
  if (gguf.empty()) {
    auto found = find_default_gguf();
    if (!found) {
      std::fprintf(stderr, "grammar_compile_bench: no default model found; pass --gguf FILE\n");
      return 1;
    }
    gguf = found->string();
  }
  try {
    GgufFile file(gguf);
    Tokenizer tokenizer = load_gguf_tokenizer(file);
    std::vector<int32_t> stops;
    if (auto eos = tokenizer.eos_token_id()) stops.push_back(*eos);
    structured::ConstraintLimits limits;
    structured::GrammarCompilerOptions options;
    options.threads = threads;
    structured::GrammarCompiler compiler(tokenizer, tokenizer.vocab_size(), stops, limits, options);

    Clocks start = now();
    compiler.prepare();
    const Clocks table = since(start);
    std::printf("vocabulary %d, compile threads %d\n", tokenizer.vocab_size(), compiler.threads());
    std::printf("token table + tokenizer info (once per engine): %.1f ms wall, %.1f ms CPU\n",
                table.wall, table.cpu);

    std::vector<double> cold_wall, cold_cpu, warm_wall, warm_cpu;
    for (int v = 0; v < variants; ++v) {
      structured::ConstraintSpec spec;
      spec.kind = structured::ConstraintKind::kJsonSchema;
      spec.text = tool_schema(v);
      spec.field = "tools";
      start = now();
      compiler.compile(spec);
      const Clocks cold = since(start);
      start = now();
      compiler.compile(spec);
      const Clocks warm = since(start);
      cold_wall.push_back(cold.wall);
      cold_cpu.push_back(cold.cpu);
      warm_wall.push_back(warm.wall);
      warm_cpu.push_back(warm.cpu);
      std::printf("variant %d: cold %.2f ms wall, %.2f ms CPU; warm %.4f ms wall\n", v, cold.wall,
                  cold.cpu, warm.wall);
    }
    std::printf(
        "tool schema, %d variants: cold median %.2f ms wall (%.2f ms CPU), warm median %.4f ms "
        "wall\n",
        variants, median(cold_wall), median(cold_cpu), median(warm_wall));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "grammar_compile_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
