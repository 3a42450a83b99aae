#include "relayllm/structured/grammar_compiler.h"

#include <spdlog/spdlog.h>
#include <xgrammar/xgrammar.h>

#include <chrono>
#include <future>
#include <list>
#include <regex>
#include <thread>
#include <unordered_map>

#include "relayllm/common/thread_pool.h"
#include "relayllm/structured/compiled_constraint_impl.h"
#include "relayllm/structured/constraint_limits.h"
#include "relayllm/structured/left_recursion.h"
#include "relayllm/structured/token_table.h"

namespace relayllm::structured {
namespace {

// An EBNF string literal for `text`: quotes, backslashes and control bytes escaped.
std::string ebnf_literal(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

xgrammar::Grammar to_grammar(const ConstraintSpec& spec) {
  switch (spec.kind) {
    case ConstraintKind::kJsonSchema:
      return xgrammar::Grammar::FromJSONSchema(spec.text, spec.any_whitespace, std::nullopt,
                                               std::nullopt, spec.strict);
    case ConstraintKind::kJsonObject: {
      // Any JSON object, as response_format json_object asks (the builtin grammar also takes
      // arrays and scalars at the top level).
      return xgrammar::Grammar::FromJSONSchema(R"({"type": "object"})", spec.any_whitespace,
                                               std::nullopt, std::nullopt, false);
    }
    case ConstraintKind::kRegex:
      // The empty regex matches the empty string; xgrammar's converter reads past its end.
      if (spec.text.empty()) return xgrammar::Grammar::FromEBNF("root ::= \"\"");
      return xgrammar::Grammar::FromRegex(spec.text);
    case ConstraintKind::kEbnf:
      return xgrammar::Grammar::FromEBNF(spec.text);
    case ConstraintKind::kChoice: {
      std::string ebnf = "root ::= ";
      for (size_t i = 0; i < spec.choices.size(); ++i)
        ebnf += (i ? " | " : "") + ebnf_literal(spec.choices[i]);
      return xgrammar::Grammar::FromEBNF(ebnf);
    }
    case ConstraintKind::kStructuralTag: {
      std::vector<xgrammar::StructuralTagItem> tags;
      for (const StructuralTag& t : spec.tags) tags.push_back({t.begin, t.schema, t.end});
      return xgrammar::Grammar::FromStructuralTag(tags, spec.triggers);
    }
  }
  throw ConstraintError(fmt::format("field '{}': unknown constraint kind", spec.field));
}

// xgrammar's messages start with a time and its source location ("[06:25:40]
// .../regex_converter.cc:73: ") and may span lines; the user gets the problem, on one line.
std::string one_line(std::string text) {
  static const std::regex location(R"(^\[[0-9:]+\] \S+:[0-9]+: )");
  text = std::regex_replace(text, location, "");
  for (char& c : text)
    if (c == '\n' || c == '\r') c = ' ';
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

}  // namespace

int32_t CompiledConstraint::vocab_size() const { return impl_->vocab_size; }
size_t CompiledConstraint::memory_bytes() const { return impl_->compiled.MemorySizeBytes(); }

struct GrammarCompiler::State {
  std::once_flag init_once;
  std::optional<xgrammar::GrammarCompiler> compiler;
  std::mutex mu;  // guards the cache and the stats
  using Entry = std::shared_future<std::shared_ptr<const CompiledConstraint>>;
  std::list<std::string> lru;  // most recent first
  std::unordered_map<std::string, std::pair<Entry, std::list<std::string>::iterator>> cache;
  GrammarCompilerStats stats;
};

GrammarCompiler::GrammarCompiler(Tokenizer tokenizer, int32_t vocab_size,
                                 std::vector<int32_t> stop_token_ids, ConstraintLimits limits,
                                 GrammarCompilerOptions options)
    : tokenizer_(std::move(tokenizer)),
      vocab_size_(vocab_size),
      stop_token_ids_(std::move(stop_token_ids)),
      limits_(limits),
      options_(options),
      state_(std::make_unique<State>()) {
  // The cores this process may use (a container's or taskset's, not the host's), at most 8:
  // one grammar has a few hundred token-mask states, spread over a thread pool.
  if (options_.threads <= 0) options_.threads = std::clamp(usable_cpu_count(), 1, 8);
  options_.max_cached = std::max<size_t>(options_.max_cached, 1);
  std::erase_if(stop_token_ids_, [&](int32_t id) { return id < 0 || id >= vocab_size_; });
}

void GrammarCompiler::prepare() {
  std::call_once(state_->init_once, [&] {
    const auto start = std::chrono::steady_clock::now();
    TokenTable table = make_token_table(tokenizer_, vocab_size_);
    xgrammar::TokenizerInfo info(table.token_bytes, xgrammar::VocabType::RAW, vocab_size_,
                                 stop_token_ids_, false);
    // Our own cache (in compile) replaces xgrammar's.
    state_->compiler.emplace(info, options_.threads, false);
    spdlog::info("structured output: token table of {} ids built in {:.1f} ms", vocab_size_,
                 std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  });
}

GrammarCompiler::~GrammarCompiler() = default;

std::shared_ptr<const CompiledConstraint> GrammarCompiler::compile(const ConstraintSpec& spec) {
  const std::string key = spec.cache_key();
  std::promise<std::shared_ptr<const CompiledConstraint>> promise;
  std::optional<State::Entry> existing;
  {
    std::lock_guard lock(state_->mu);
    auto it = state_->cache.find(key);
    if (it != state_->cache.end()) {
      ++state_->stats.cache_hits;
      state_->lru.splice(state_->lru.begin(), state_->lru, it->second.second);
      existing = it->second.first;
    } else {
      state_->lru.push_front(key);
      state_->cache.emplace(key, std::make_pair(promise.get_future().share(), state_->lru.begin()));
      while (state_->lru.size() > options_.max_cached) {
        state_->cache.erase(state_->lru.back());
        state_->lru.pop_back();
      }
    }
  }
  // Waits when another thread is compiling the same spec; rethrows its error.
  if (existing) return existing->get();
  auto start = std::chrono::steady_clock::now();
  try {
    check_constraint_limits(spec, limits_);
    prepare();
    start = std::chrono::steady_clock::now();  // the grammar's own time, without the table
    xgrammar::Grammar grammar = [&] {
      try {
        return to_grammar(spec);
      } catch (const ConstraintError&) {
        throw;
      } catch (const std::exception& e) {
        throw ConstraintError(fmt::format("field '{}': {}", spec.field, one_line(e.what())));
      }
    }();
    // A small schema can expand into a huge grammar (deep $ref chains, long enums): refuse
    // before the token-level compile, whose cost grows with it.
    const size_t grammar_bytes = grammar.ToString().size();
    if (grammar_bytes > limits_.max_grammar_bytes)
      throw ConstraintError(fmt::format(
          "field '{}': the grammar it expands to has {} bytes, more than the {} allowed",
          spec.field, grammar_bytes, limits_.max_grammar_bytes));
    check_left_recursion(grammar, spec.field);
    const auto parsed = std::chrono::steady_clock::now();
    auto impl = std::make_shared<CompiledConstraint::Impl>(
        CompiledConstraint::Impl{state_->compiler->CompileGrammar(grammar), vocab_size_});
    auto compiled = std::make_shared<const CompiledConstraint>(std::move(impl));
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    {
      std::lock_guard lock(state_->mu);
      ++state_->stats.compiles;
      state_->stats.compile_seconds += seconds;
    }
    spdlog::debug(
        "structured output: grammar for '{}' compiled in {:.2f} ms ({:.2f} ms to the grammar, "
        "the rest token masks)",
        spec.field, seconds * 1e3,
        std::chrono::duration<double, std::milli>(parsed - start).count());
    promise.set_value(compiled);
    return compiled;
  } catch (...) {
    std::exception_ptr error = std::current_exception();
    try {
      std::rethrow_exception(error);
    } catch (const ConstraintError&) {
    } catch (const std::exception& e) {
      error = std::make_exception_ptr(
          ConstraintError(fmt::format("field '{}': {}", spec.field, one_line(e.what()))));
    }
    {
      // Failures are not cached: the same text fails the same way, cheaply, before compiling.
      std::lock_guard lock(state_->mu);
      auto it = state_->cache.find(key);
      if (it != state_->cache.end()) {
        state_->lru.erase(it->second.second);
        state_->cache.erase(it);
      }
    }
    promise.set_exception(error);
    std::rethrow_exception(error);
  }
}

GrammarCompilerStats GrammarCompiler::stats() const {
  std::lock_guard lock(state_->mu);
  return state_->stats;
}

}  // namespace relayllm::structured
