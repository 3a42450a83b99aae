#include "relayllm/engine/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "relayllm/backend/batch_plan_builder.h"
#include "relayllm/common/error.h"
#include "relayllm/dist/communicator.h"

namespace relayllm {
namespace {

int32_t resolve_max_model_len(const EngineConfig& config, const ModelConfig& model) {
  int32_t limit = int32_t(model.max_position_embeddings);
  if (config.max_model_len <= 0) return limit;
  if (config.max_model_len > limit)
    spdlog::warn("max model len {} exceeds the model's max_position_embeddings {}",
                 config.max_model_len, limit);
  return config.max_model_len;
}

int32_t resolve_num_blocks(const EngineConfig& config, const LlamaModel& model) {
  if (config.num_kv_blocks > 0) return config.num_kv_blocks;
  size_t per_block = model.kv_bytes_per_block(config.block_size);
  size_t bytes = config.kv_cache_budget ? config.kv_cache_budget(model) : config.kv_cache_bytes;
  return int32_t(std::clamp<size_t>(bytes / per_block, 1, size_t(INT32_MAX)));
}

}  // namespace

Engine::Engine(const ModelConfig& config, const ModelWeights& weights, Tokenizer tokenizer,
               std::unique_ptr<Backend> backend, EngineConfig engine_config)
    : config_(std::move(engine_config)),
      tokenizer_(std::move(tokenizer)),
      backend_(std::move(backend)),
      model_(
          config, weights, *backend_,
          std::max<int64_t>(resolve_max_model_len(config_, config), config.max_position_embeddings),
          config_.tensor_parallel ? &config_.tensor_parallel->comm() : nullptr),
      runner_(model_),
      pool_(resolve_num_blocks(config_, model_), config_.block_size),
      prefixes_(
          pool_,
          [this](const std::string& name, std::span<const int32_t> tokens) {
            check_prefix_tokens(name, tokens);
          },
          [this](const RelayPrefix& prefix) { compute_prefix_kv(prefix); }),
      scheduler_(config_.scheduler, pool_),
      row_sampler_(config_.sampling_threads) {
  config_.max_model_len = resolve_max_model_len(config_, config);
  config_.num_kv_blocks = pool_.num_blocks();
  kv_cache_ = model_.allocate_kv_cache(pool_.num_blocks(), pool_.block_size());
  if (config_.tensor_parallel && config_.tensor_parallel->comm().size() > 1) {
    RELAYLLM_CHECK(config_.tensor_parallel->comm().rank() == 0,
                   "the engine runs on rank 0; rank {} runs the worker loop",
                   config_.tensor_parallel->comm().rank());
    tp_leader_ = config_.tensor_parallel.get();
    TpMessage init;
    init.kind = TpMessage::Kind::kInit;
    init.init = {pool_.num_blocks(), pool_.block_size(),
                 std::max<int64_t>(config_.max_model_len, config.max_position_embeddings)};
    tp_leader_->send(init);
    runner_.set_leader(tp_leader_);
  }
  prefixes_.set_max_pinned_fraction(config_.max_prefix_kv_fraction);
  relay_cost_ = RelayCostModel::for_shape(pool_.block_size(), int32_t(config.num_heads),
                                          int32_t(config.num_kv_heads), int32_t(config.head_dim),
                                          int32_t(dtype_size(backend_->kv_dtype())));
  set_enforce_eager(config_.enforce_eager);
  std::vector<int32_t> eos_ids = config.eos_token_ids;
  if (auto eos = tokenizer_.eos_token_id();
      eos && std::find(eos_ids.begin(), eos_ids.end(), *eos) == eos_ids.end())
    eos_ids.push_back(*eos);
  output_ =
      std::make_unique<OutputProcessor>(tokenizer_, std::move(eos_ids), config_.max_model_len);
  spdlog::info(
      "engine: backend {}, {} KV blocks of {} tokens ({:.1f} MiB), max model len {}",
      backend_->name(), pool_.num_blocks(), pool_.block_size(),
      double(model_.kv_bytes_per_block(pool_.block_size())) * pool_.num_blocks() / (1 << 20),
      config_.max_model_len);
}

Engine::~Engine() {
  if (!tp_leader_) return;
  try {
    tp_leader_->stop();
  } catch (const std::exception& e) {
    spdlog::error("tensor parallelism: could not stop the other ranks: {}", e.what());
  }
}

void Engine::set_enforce_eager(bool eager) {
  config_.enforce_eager = eager;
  runner_.set_graph_policy(
      {!eager && config_.cuda_graph_max_batch > 0,
       std::min(config_.cuda_graph_max_batch, config_.scheduler.max_num_seqs)});
}

const RelayPrefix& Engine::register_prefix(const std::string& name, std::vector<int32_t> tokens) {
  RELAYLLM_CHECK(config_.enable_relay_attention,
                 "relay prefix '{}' given but relay attention is off in this engine", name);
  return prefixes_.add(name, std::move(tokens));
}

void Engine::check_prefix_tokens(const std::string& name, std::span<const int32_t> tokens) const {
  RELAYLLM_CHECK(int32_t(tokens.size()) < config_.max_model_len,
                 "relay prefix '{}' has {} tokens, max model len is {}", name, tokens.size(),
                 config_.max_model_len);
  for (int32_t id : tokens)
    RELAYLLM_CHECK(id >= 0 && id < model_.config().vocab_size,
                   "relay prefix '{}': token id {} is outside the vocabulary (size {})", name, id,
                   model_.config().vocab_size);
}

void Engine::compute_prefix_kv(const RelayPrefix& prefix) {
  // The prefix is prefilled like a request without a prefix, in budget-sized chunks;
  // its logits are not needed.
  const int32_t total = int32_t(prefix.tokens.size());
  const int32_t chunk = config_.scheduler.max_num_batched_tokens;
  for (int32_t start = 0; start < total; start += chunk) {
    const int32_t n = std::min(chunk, total - start);
    BatchPlanBuilder builder(pool_.block_size());
    builder.add_sequence({std::span<const int32_t>(prefix.tokens).subspan(size_t(start), size_t(n)),
                          start, prefix.blocks});
    runner_.forward(builder.take(), kv_cache_, logits_);
  }
}

void Engine::remove_prefix(const std::string& name) { prefixes_.remove(name); }

void Engine::release_prefix_use(Sequence& seq) {
  if (!seq.prefix) return;
  RelayPrefix* prefix = seq.prefix;
  seq.prefix = nullptr;  // the sequence keeps prefix_len for its own positions
  prefixes_.release(*prefix);
}

int64_t Engine::add_request(std::vector<int32_t> prompt_ids, const SamplingParams& params,
                            const std::string& prefix_name) {
  params.validate();
  RELAYLLM_CHECK(!prompt_ids.empty(), "the prompt is empty");
  const int32_t vocab = int32_t(model_.config().vocab_size);
  for (int32_t id : prompt_ids)
    RELAYLLM_CHECK(id >= 0 && id < vocab, "prompt token id {} is outside the vocabulary (size {})",
                   id, vocab);
  RELAYLLM_CHECK(int32_t(prompt_ids.size()) < config_.max_model_len,
                 "the prompt has {} tokens but the maximum model length is {}", prompt_ids.size(),
                 config_.max_model_len);
  RelayPrefix* prefix = nullptr;
  if (!prefix_name.empty()) {
    RELAYLLM_CHECK(config_.enable_relay_attention,
                   "relay_prefix '{}' given but relay attention is off in this engine",
                   prefix_name);
    prefix = prefixes_.find(prefix_name);  // skips prefixes being removed
    RELAYLLM_CHECK(prefix != nullptr && prefix->ready, "relay_prefix '{}' is not registered",
                   prefix_name);
    // Prompt logprobs need every prompt position computed by the request itself.
    RELAYLLM_CHECK(!params.prompt_logprobs,
                   "relay_prefix '{}' cannot be combined with prompt_logprobs (nor echo with "
                   "logprobs)",
                   prefix_name);
    const std::vector<int32_t>& t = prefix->tokens;
    auto diverge = std::mismatch(t.begin(), t.end(), prompt_ids.begin(), prompt_ids.end());
    const size_t same = size_t(diverge.first - t.begin());
    RELAYLLM_CHECK(same == t.size() && t.size() < prompt_ids.size(),
                   "the prompt ({} tokens) does not start token-exactly with relay_prefix '{}' ({} "
                   "tokens) followed by at least one more token; they agree on the first {} tokens "
                   "(a text prefix that ends mid-word or in a space can tokenize differently once "
                   "the prompt continues it: end it with a newline, or send token ids)",
                   prompt_ids.size(), prefix_name, t.size(), same);
  } else if (config_.enable_relay_attention && !params.prompt_logprobs) {
    prefix = prefixes_.longest_match(prompt_ids);
  }
  for (const auto& [id, bias] : params.logit_bias)
    RELAYLLM_CHECK(id < vocab,
                   "field 'logit_bias': token id {} is outside the vocabulary (size {})", id,
                   vocab);
  if (params.allowed_token_ids)
    for (int32_t id : *params.allowed_token_ids)
      RELAYLLM_CHECK(id < vocab,
                     "field 'allowed_token_ids': token id {} is outside the vocabulary (size {})",
                     id, vocab);
  if (params.constraint)
    RELAYLLM_CHECK(params.constraint->vocab_size() == vocab,
                   "the request's grammar was compiled for a vocabulary of {}, the model has {}",
                   params.constraint->vocab_size(), vocab);
  const int32_t prefix_len = prefix ? int32_t(prefix->tokens.size()) : 0;
  const int32_t bs = pool_.block_size();
  const int32_t own_blocks = (int32_t(prompt_ids.size()) - prefix_len + bs) / bs;
  RELAYLLM_CHECK(own_blocks <= pool_.num_blocks(),
                 "the prompt needs {} KV blocks but the pool has {} in all", own_blocks,
                 pool_.num_blocks());
  // Blocks pinned by relay prefixes stay pinned until removed: a prompt that cannot fit
  // beside them would only wait forever.
  const int32_t unpinned = pool_.num_blocks() - num_prefix_blocks();
  if (own_blocks > unpinned)
    throw KvCapacityError(fmt::format(
        "the prompt needs {} KV blocks but only {} of the pool's {} are not pinned by relay "
        "prefixes; retry later or remove a prefix",
        own_blocks, unpinned, pool_.num_blocks()));
  int64_t id = next_id_++;
  // Requests without a seed of their own draw from a stream derived from the engine seed.
  uint64_t engine_seed = config_.seed * 0x9e3779b97f4a7c15ull + uint64_t(id);
  auto seq = std::make_unique<Sequence>(id, std::move(prompt_ids), params,
                                        RequestRng::for_request(params, engine_seed));
  seq->arrival_time = Clock::now();
  if (seq->params.constraint) {
    seq->grammar = std::make_unique<structured::GrammarMatcher>(seq->params.constraint);
    seq->token_bitmask.assign(structured::bitmask_words(vocab), 0);
  }
  // Attach only once nothing can throw, so a refused request never holds a prefix.
  if (prefix) {
    seq->prefix = prefix;
    seq->prefix_len = prefix_len;
    prefixes_.attach(*prefix);
    ++stats_.relay_attached_requests;
    stats_.relay_shared_tokens += prefix_len;
  }
  output_->start(*seq);
  Sequence* raw = seq.get();
  sequences_[id] = std::move(seq);
  scheduler_.add(raw);
  return id;
}

void Engine::abort(int64_t id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end() || it->second->finished()) return;
  finish(*it->second, "abort");
}

void Engine::finish(Sequence& seq, const std::string& reason) {
  scheduler_.remove(&seq);
  release_prefix_use(seq);
  seq.status = SequenceStatus::kFinished;
  seq.finish_reason = reason;
  seq.finish_time = Clock::now();
}

void Engine::release(int64_t id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return;
  if (!it->second->finished()) finish(*it->second, "abort");
  sequences_.erase(it);
}

const Sequence* Engine::find(int64_t id) const {
  auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : it->second.get();
}

BatchPlan Engine::build_plan(const std::vector<ScheduledSequence>& batch,
                             std::vector<int32_t>& first_logit_index) {
  BatchPlanBuilder builder(pool_.block_size());
  const int32_t bs = pool_.block_size();
  first_logit_index.assign(batch.size(), -1);

  // Registered prefixes are pinned outermost groups; automatic groups grow inside them
  // (or alone) over the own blocks that scheduled requests share.
  std::vector<RelayCandidate> candidates(batch.size());
  const int32_t levels = backend_->max_relay_levels();
  // Automatic groups only where the backend takes nested groups (CPU and CUDA): on a
  // one-level backend they stay off, so its plans are the registered prefixes alone.
  const bool auto_groups = config_.enable_relay_attention && config_.auto_relay_groups &&
                           config_.scheduler.enable_prefix_caching && levels > 1;
  for (size_t i = 0; i < batch.size(); ++i) {
    const Sequence& seq = *batch[i].seq;
    RelayCandidate& c = candidates[i];
    c.blocks = seq.blocks;
    c.query_len = batch[i].num_tokens;
    if (seq.prefix)
      c.root = builder.prefix_group(seq.prefix->id, seq.prefix_len, seq.prefix->blocks);
    c.max_levels = levels - (seq.prefix ? 1 : 0);
    c.groupable_blocks =
        auto_groups ? std::min(seq.num_computed / bs, int32_t(seq.blocks.size())) : 0;
  }
  const RelayGroupPlan groups = plan_relay_groups(candidates, relay_cost_);
  std::vector<int32_t> plan_group(groups.groups.size(), -1);
  for (size_t g = 0; g < groups.groups.size(); ++g) {
    const RelayGroup& group = groups.groups[g];
    const int32_t parent = group.parent >= 0 ? plan_group[size_t(group.parent)] : group.root;
    plan_group[g] =
        builder.nested_group(parent, candidates[size_t(group.members[0])].blocks.subspan(
                                         size_t(group.first_block), size_t(group.num_blocks)));
  }

  std::vector<int32_t> tokens;
  int32_t num_logit_rows = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    Sequence& seq = *batch[i].seq;
    const int32_t n = batch[i].num_tokens;
    tokens.clear();
    for (int32_t j = seq.num_computed; j < seq.num_computed + n; ++j)
      tokens.push_back(seq.token_at(seq.prefix_len + j));
    const int32_t skip = groups.own_first_block[i] * bs;  // own tokens read through groups
    SequenceRows rows{
        tokens, seq.num_computed - skip,
        std::span<const int32_t>(seq.blocks).subspan(size_t(groups.own_first_block[i])),
        groups.leaf[i] >= 0 ? plan_group[size_t(groups.leaf[i])] : candidates[i].root,
        seq.prefix_len + skip};
    if (rows.prefix_group >= 0)
      seq.relay_prefix_tokens = std::max(seq.relay_prefix_tokens, seq.prefix_len + skip);
    const int32_t first_row = builder.add_sequence(rows);
    // Logit rows: every prompt row while prompt logprobs are collected, else only
    // the last row when it completes the sequence's known tokens.
    const bool completes = seq.num_computed + n == seq.own_len();
    first_logit_index[i] = num_logit_rows;
    const int32_t count = seq.wants_prompt_logprobs() && seq.is_prefilling() ? n
                          : completes                                        ? 1
                                                                             : 0;
    builder.add_logit_rows(first_row + n - count, count);
    num_logit_rows += count;
  }
  BatchPlan plan = builder.take();
  record_relay_stats(plan, groups);
  return plan;
}

void Engine::record_relay_stats(const BatchPlan& plan, const RelayGroupPlan& groups) {
  // Every group with two or more requests; registered prefixes' savings by the same model.
  int32_t formed = 0, depth = 0;
  double saved = 0;
  for (const RelayGroup& g : groups.groups) saved += g.saved_rows;
  std::vector<std::vector<int32_t>> query_lens(plan.prefix_groups.size());
  for (const PlannedSequence& s : plan.sequences)
    if (s.prefix_group >= 0) {
      int32_t d = 0;
      for (int32_t g = s.prefix_group; g >= 0; g = plan.prefix_groups[size_t(g)].parent, ++d)
        query_lens[size_t(g)].push_back(s.query_len);
      depth = std::max(depth, d);
    }
  for (size_t g = 0; g < plan.prefix_groups.size(); ++g) {
    if (query_lens[g].size() < 2) continue;
    ++formed;
    if (g < plan.prefix_groups.size() - groups.groups.size()) {  // a registered prefix
      const int64_t len = plan.prefix_groups[g].prefix_len;
      saved += std::max(0.0, relay_cost_.paged_rows(len, query_lens[g]) -
                                 relay_cost_.relay_rows(len, query_lens[g]));
    }
  }
  bool decode = !plan.sequences.empty();
  int64_t rows_read = 0, paged_rows = 0;
  for (const PlannedSequence& s : plan.sequences) {
    decode = decode && s.query_len == 1;
    rows_read += s.context_len;
    paged_rows += s.position_offset + s.context_len;
  }
  for (const PlannedPrefixGroup& g : plan.prefix_groups) rows_read += g.prefix_len;
  if (decode) {
    ++stats_.decode_steps;
    stats_.decode_attention_kv_rows += rows_read;
    stats_.decode_paged_kv_rows += paged_rows;
  }
  stats_.relay_groups += formed;
  stats_.relay_auto_groups += int64_t(groups.groups.size());
  stats_.relay_kv_rows_saved += int64_t(saved);
  stats_.last_step_relay_groups = formed;
  stats_.last_step_relay_depth = depth;
  stats_.max_relay_depth = std::max(stats_.max_relay_depth, depth);
  stats_.last_step_relay_kv_rows_saved = int64_t(saved);
}

std::vector<RequestOutput> Engine::step() {
  const auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  const Clock::time_point step_start = Clock::now();
  std::vector<RequestOutput> outputs;
  std::vector<ScheduledSequence> batch = scheduler_.schedule();
  if (batch.empty()) {
    // Work is queued but nothing fits: the head request can never run (relay prefixes
    // pin the rest of the pool). Fail it rather than spin; one without any output is an
    // error, never an empty "length" completion.
    if (!scheduler_.empty()) {
      for (auto& [id, seq] : sequences_)
        if (seq->status == SequenceStatus::kWaiting) {
          spdlog::warn(
              "request {} cannot get KV blocks (pool of {}, {} pinned by relay "
              "prefixes), finishing it",
              id, pool_.num_blocks(), num_prefix_blocks());
          if (seq->output_ids.empty()) {
            seq->error_message = fmt::format(
                "the request needs more KV blocks than are free beside the {} pinned by relay "
                "prefixes (pool of {}); retry later",
                num_prefix_blocks(), pool_.num_blocks());
            finish(*seq, "error");
          } else {
            finish(*seq, "length");
          }
          outputs.push_back({id, {}, {}, true, seq.get()});
          break;
        }
    }
    return outputs;
  }
  std::vector<int32_t> first_logit;
  BatchPlan plan = build_plan(batch, first_logit);
  // The grammar masks of the tokens sampled this step depend only on tokens already accepted,
  // so they are computed on the mask worker's thread while the forward pass runs.
  std::vector<Sequence*> masked;
  for (const ScheduledSequence& s : batch)
    if (s.seq->grammar && s.seq->num_computed + s.num_tokens == s.seq->own_len())
      masked.push_back(s.seq);
  if (!masked.empty()) {
    if (!mask_worker_)
      mask_worker_ = std::make_unique<GrammarMaskWorker>(config_.grammar_mask_threads);
    mask_worker_->start(std::move(masked));
  }
  stats_.plan_seconds += seconds_since(step_start);
  const Clock::time_point forward_start = Clock::now();
  try {
    runner_.forward(plan, kv_cache_, logits_);
  } catch (...) {
    if (mask_worker_) mask_worker_->wait();
    throw;
  }
  if (mask_worker_) {
    mask_worker_->wait();
    const GrammarMaskStats& m = mask_worker_->stats();
    stats_.grammar_masks = m.masks;
    stats_.grammar_mask_fill_seconds = m.fill_seconds;
    stats_.grammar_mask_wait_seconds = m.wait_seconds;
  }
  ++stats_.steps;
  stats_.graph_steps = runner_.graph_steps();
  stats_.forward_seconds += seconds_since(forward_start);
  const Clock::time_point sample_start = Clock::now();

  const int64_t vocab = model_.config().vocab_size;
  // Each sequence's rows: prompt logprobs and the draw run on the row sampler's threads (they
  // touch only their sequence), then the results are committed in batch order on this thread.
  std::vector<RowWork> work(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    Sequence& seq = *batch[i].seq;
    RowWork& w = work[i];
    w.seq = &seq;
    w.num_tokens = batch[i].num_tokens;
    if (seq.is_prefilling())
      stats_.prompt_tokens += std::min(
          w.num_tokens, int32_t(seq.prompt_ids.size()) - seq.prefix_len - seq.num_computed);
    w.num_rows = (i + 1 < batch.size() ? first_logit[i + 1] : int32_t(plan.logit_rows.size())) -
                 first_logit[i];
    w.rows = logits_.data() + int64_t(first_logit[i]) * vocab;
    w.start = seq.num_computed;  // own index of the first row
    seq.num_computed += w.num_tokens;
    w.draws = seq.num_computed >= seq.own_len() && w.num_rows > 0;
    if (w.draws && !seq.params.bad_words_ids.empty()) w.banned = banned_ids(seq);
  }
  row_sampler_.run(work.size(),
                   [&](size_t i, std::vector<float>& scratch) { sample_rows(work[i], scratch); });
  stats_.sample_seconds += seconds_since(sample_start);
  const Clock::time_point commit_start = Clock::now();
  for (size_t i = 0; i < batch.size(); ++i) {
    Sequence& seq = *work[i].seq;
    RequestOutput out;
    out.id = seq.id;
    out.seq = &seq;
    commit_rows(work[i], out);
    scheduler_.on_computed(seq);
    out.finished = seq.finished();
    if (!out.new_token_ids.empty() || out.finished) outputs.push_back(std::move(out));
  }
  stats_.commit_seconds += seconds_since(commit_start);
  return outputs;
}

std::vector<int32_t> Engine::banned_ids(const Sequence& seq) const {
  std::vector<int32_t> out;
  const auto& generated = seq.output_ids;
  for (const std::vector<int32_t>& word : seq.params.bad_words_ids) {
    if (word.empty()) continue;
    const size_t before = word.size() - 1;
    if (before > generated.size()) continue;
    if (std::equal(word.begin(), word.end() - 1, generated.end() - std::ptrdiff_t(before)))
      out.push_back(word.back());
  }
  return out;
}

void Engine::sample_rows(RowWork& w, std::vector<float>& scratch) const {
  Sequence& seq = *w.seq;
  const int64_t vocab = model_.config().vocab_size;
  const int32_t prompt_len = int32_t(seq.prompt_ids.size());
  try {
    if (seq.wants_prompt_logprobs() && w.num_rows == w.num_tokens) {
      // Row r predicts the token after own index start+r.
      if (seq.prompt_logprobs.empty()) seq.prompt_logprobs.push_back(std::nullopt);
      scratch.resize(size_t(vocab));
      std::span<float> row_logprobs(scratch.data(), size_t(vocab));
      for (int32_t r = 0; r < w.num_rows; ++r) {
        int32_t next = seq.prefix_len + w.start + r + 1;
        if (next >= prompt_len || int32_t(seq.prompt_logprobs.size()) > next) continue;
        log_softmax(std::span(w.rows + int64_t(r) * vocab, vocab), row_logprobs);
        seq.prompt_logprobs.push_back(
            top_logprobs(row_logprobs, seq.prompt_ids[next], *seq.params.prompt_logprobs));
      }
    }
    if (!w.draws) return;  // mid-prefill chunk
    const float* last = w.rows + int64_t(w.num_rows - 1) * vocab;
    if (config_.capture_logits) seq.captured_logits.emplace_back(last, last + vocab);
    if (seq.grammar && !seq.grammar_error.empty()) return;  // committed as an error
    SampleInput in;
    in.logits = std::span(last, vocab);
    in.params = &seq.params;
    in.prompt_ids = seq.prompt_ids;
    in.output_ids = seq.output_ids;
    in.eos_token_ids = output_->eos_token_ids();
    in.banned_ids = w.banned;
    if (seq.grammar) in.token_bitmask = seq.token_bitmask;
    try {
      w.sampled = sample_token(in, seq.rng, scratch);
    } catch (const Error&) {
      w.sample_error = std::current_exception();
      return;
    }
    // The grammar advances here rather than in commit_rows, so the requests of a step advance
    // on the row sampler's threads instead of one after the other on the engine thread.
    if (seq.grammar) w.grammar_rejected = !seq.grammar->accept_token(w.sampled.token);
  } catch (...) {
    w.fatal = std::current_exception();
  }
}

void Engine::commit_rows(RowWork& w, RequestOutput& out) {
  Sequence& seq = *w.seq;
  if (w.fatal) std::rethrow_exception(w.fatal);
  if (w.sample_error) {
    // Restrictions that leave no token (allowed ids all banned, a grammar at a dead end) end
    // this request only; anything else (a NaN logit, a bad id) is the engine's error.
    if (!seq.grammar && !seq.params.allowed_token_ids && w.banned.empty())
      std::rethrow_exception(w.sample_error);
    try {
      std::rethrow_exception(w.sample_error);
    } catch (const Error& e) {
      seq.error_message = e.what();
    }
    finish(seq, "error");
    return;
  }
  if (!w.draws) return;
  if (seq.grammar && !seq.grammar_error.empty()) {
    seq.error_message = std::exchange(seq.grammar_error, {});
    finish(seq, "error");
    return;
  }
  if (w.sampled.logprobs) seq.logprobs.push_back(*w.sampled.logprobs);
  if (w.grammar_rejected) {
    seq.error_message =
        fmt::format("structured output: the grammar rejected sampled token {}", w.sampled.token);
    finish(seq, "error");
    return;
  }
  append_token(seq, w.sampled.token, out);
  // A complete grammar ends the request even when the stop token itself would not
  // (ignore_eos).
  if (seq.grammar && seq.grammar->is_terminated() && !seq.finished()) finish(seq, "stop");
}

void Engine::append_token(Sequence& seq, int32_t token, RequestOutput& out) {
  out.new_token_ids.push_back(token);
  ++stats_.generation_tokens;
  if (!seq.first_token_time) seq.first_token_time = Clock::now();
  if (std::optional<std::string> reason = output_->append(seq, token)) finish(seq, *reason);
  out.new_text = output_->take_stable_text(seq);
}

}  // namespace relayllm
