// Compiles ConstraintSpecs into token-level grammars for one tokenizer, with a cache keyed by
// the spec's text (schema, regex, grammar, choices and options): a tool schema sent with
// every request is compiled once. Thread-safe: the server's API threads compile while the
// engine thread runs matchers over earlier results. xgrammar does the work; its types stay
// inside the .cc files.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "relayllm/structured/constraint_spec.h"
#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm::structured {

// A compiled grammar, shared by every request that asks for the same spec. Immutable.
class CompiledConstraint {
 public:
  struct Impl;
  explicit CompiledConstraint(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  const Impl& impl() const { return *impl_; }
  int32_t vocab_size() const;
  size_t memory_bytes() const;

 private:
  std::shared_ptr<const Impl> impl_;
};

struct GrammarCompilerStats {
  int64_t compiles = 0;    // cache misses that compiled
  int64_t cache_hits = 0;  // served from the cache
  double compile_seconds = 0;
};

struct GrammarCompilerOptions {
  // Threads that compute one grammar's token masks; 0: the usable cores, at most 8.
  int32_t threads = 0;
  // Compiled grammars kept, least recently used out first. A typical tool schema's grammar
  // takes tens of KiB to a few MiB (large vocabularies).
  size_t max_cached = 256;
};

class GrammarCompiler {
 public:
  // `vocab_size` is the model's (logit rows), which may exceed the tokenizer's; ids beyond
  // the tokenizer are never allowed. `stop_token_ids` end a constrained output (the
  // engine's EOS ids). The token table is built by prepare() or the first compile, not here.
  GrammarCompiler(Tokenizer tokenizer, int32_t vocab_size, std::vector<int32_t> stop_token_ids,
                  ConstraintLimits limits = {}, GrammarCompilerOptions options = {});
  ~GrammarCompiler();
  GrammarCompiler(const GrammarCompiler&) = delete;
  GrammarCompiler& operator=(const GrammarCompiler&) = delete;

  // Throws ConstraintError naming spec.field for a spec that breaks the limits or does not
  // compile. Cached by spec.cache_key().
  std::shared_ptr<const CompiledConstraint> compile(const ConstraintSpec& spec);

  // Builds the token table and xgrammar's tokenizer view (~0.1 s for a 50k vocabulary), which
  // every compile needs; a server calls it at start so the first constrained request does not
  // pay it. Idempotent and thread-safe; compile() calls it too.
  void prepare();

  int32_t threads() const { return options_.threads; }

  GrammarCompilerStats stats() const;
  const ConstraintLimits& limits() const { return limits_; }
  int32_t vocab_size() const { return vocab_size_; }

 private:
  struct State;
  Tokenizer tokenizer_;
  int32_t vocab_size_;
  std::vector<int32_t> stop_token_ids_;
  ConstraintLimits limits_;
  GrammarCompilerOptions options_;  // threads resolved
  std::unique_ptr<State> state_;
};

}  // namespace relayllm::structured
