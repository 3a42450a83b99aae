#include "relayllm/tokenizer/bpe_model.h"

#include <queue>

#include "relayllm/common/json_fields.h"
#include "relayllm/common/utf8.h"
#include "relayllm/tokenizer/tokenizer_limits.h"

namespace relayllm {

using json_fields::checked_integer;
using json_fields::child;
using json_fields::field;
using json_fields::field_or;
namespace {

// Words longer than this are not cached: they are rare and would bloat the cache.
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCachedWords = 200000;
// Ids may leave a few holes (removed tokens), not millions of them.
constexpr size_t kMaxIdGap = size_t(1) << 16;

}  // namespace

BpeModel::BpeModel(const nlohmann::json& model, const std::string& where) {
  std::string type = field_or<std::string>(model, "type", "BPE", where);
  if (type != "BPE") fail("{}: unsupported model type \"{}\" (supported: BPE)", where, type);
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      (!model["dropout"].is_number() || model["dropout"].get<double>() != 0.0)) {
    fail("{}: BPE dropout is not supported (dropout = {})", where, model["dropout"].dump());
  }
  const auto& vocab = child(model, "vocab");
  if (!vocab.is_object()) fail("{}: field \"vocab\" must be an object of token -> id", where);
  int32_t max_id = -1;
  vocab_.reserve(vocab.size());
  for (const auto& [token, id_json] : vocab.items()) {
    if (!id_json.is_number_integer() ||
        (!id_json.is_number_unsigned() && id_json.get<int64_t>() < 0))
      fail("{}.vocab: token \"{}\" has a bad id {}", where, token, id_json.dump());
    int32_t id = checked_integer<int32_t>(id_json, fmt::format("the id of token \"{}\"", token),
                                          where + ".vocab");
    if (id > kMaxTokenId)
      fail("{}.vocab: token \"{}\" has id {}, above the limit {}", where, token, id, kMaxTokenId);
    vocab_.emplace(token, id);
    max_id = std::max(max_id, id);
  }
  // The id -> token table has max_id + 1 slots: a lone huge id must not allocate gigabytes.
  if (size_t(max_id) >= vocab.size() + kMaxIdGap)
    fail("{}.vocab: largest id {} is far beyond the {} entries (ids must be dense)", where, max_id,
         vocab.size());
  id_to_token_.assign(size_t(max_id + 1), std::string());
  for (const auto& [token, id] : vocab_) id_to_token_[size_t(id)] = token;

  continuing_subword_prefix_ = field_or<std::string>(model, "continuing_subword_prefix", "", where);
  end_of_word_suffix_ = field_or<std::string>(model, "end_of_word_suffix", "", where);
  fuse_unk_ = field_or<bool>(model, "fuse_unk", false, where);
  byte_fallback_ = field_or<bool>(model, "byte_fallback", false, where);
  ignore_merges_ = field_or<bool>(model, "ignore_merges", false, where);
  if (model.contains("unk_token") && !model["unk_token"].is_null()) {
    std::string unk = field<std::string>(model, "unk_token", where);
    auto it = vocab_.find(unk);
    if (it == vocab_.end()) fail("{}: unk_token \"{}\" is not in the vocab", where, unk);
    unk_id_ = it->second;
  }
  byte_ids_.assign(256, -1);
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
    if (it != vocab_.end()) byte_ids_[size_t(b)] = it->second;
  }

  const auto& merges = child(model, "merges");
  if (!merges.is_null() && !merges.is_array()) fail("{}: field \"merges\" must be an array", where);
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& m = merges[rank];
    std::string left, right;
    if (m.is_string()) {
      // The older form "left right": exactly one space, since tokens never hold a plain space
      // there.
      const std::string& line = m.get_ref<const std::string&>();
      size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        fail("{}.merges[{}]: \"{}\" is not two tokens separated by one space", where, rank, line);
      }
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      fail("{}.merges[{}]: expected \"a b\" or [\"a\", \"b\"], got {}", where, rank, m.dump());
    }
    auto lookup = [&](const std::string& token) {
      auto it = vocab_.find(token);
      if (it == vocab_.end())
        fail("{}.merges[{}]: token \"{}\" is not in the vocab", where, rank, token);
      return it->second;
    };
    int32_t a = lookup(left), b = lookup(right);
    std::string merged = left;
    if (!continuing_subword_prefix_.empty() &&
        right.compare(0, continuing_subword_prefix_.size(), continuing_subword_prefix_) == 0) {
      merged += right.substr(continuing_subword_prefix_.size());
    } else {
      merged += right;
    }
    int32_t new_id = lookup(merged);
    merges_.emplace(pair_key(a, b), Merge{int32_t(rank), new_id});
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  // Ids missing from a vocab with gaps hold an empty string; no real token is empty.
  if (id < 0 || size_t(id) >= id_to_token_.size() || id_to_token_[size_t(id)].empty())
    return nullptr;
  return &id_to_token_[size_t(id)];
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& ids) const {
  // A pending unknown run; with fuse_unk consecutive unknown characters become one unk token.
  bool pending_unk = false;
  std::string piece;
  for (size_t i = 0; i < word.size();) {
    size_t n = std::min<size_t>(size_t(utf8::sequence_length(static_cast<unsigned char>(word[i]))),
                                word.size() - i);
    bool first = i == 0, last = i + n == word.size();
    piece.clear();
    if (!first) piece += continuing_subword_prefix_;
    piece.append(word.substr(i, n));
    if (last) piece += end_of_word_suffix_;
    i += n;
    auto it = vocab_.find(piece);
    if (it != vocab_.end()) {
      if (pending_unk) ids.push_back(*unk_id_);
      pending_unk = false;
      ids.push_back(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : piece) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        // Matches the reference: a pending unk is emitted after the fallback bytes, not before.
        for (char c : piece) ids.push_back(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && !fuse_unk_) ids.push_back(*unk_id_);
      pending_unk = true;
    }
  }
  if (pending_unk) ids.push_back(*unk_id_);
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  std::vector<int32_t> ids;
  initial_symbols(word, ids);
  const int n = int(ids.size());
  if (n < 2) {
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  // Doubly linked symbols; a merged-away symbol gets id -1.
  std::vector<int> prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    prev[size_t(i)] = i - 1;
    next[size_t(i)] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t new_id;
    // Lowest rank first, then leftmost: the order the reference applies merges in.
    bool operator<(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate> queue;
  auto push_pair = [&](int left) {
    int right = next[size_t(left)];
    if (right < 0) return;
    auto it = merges_.find(pair_key(ids[size_t(left)], ids[size_t(right)]));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.new_id});
  };
  for (int i = 0; i + 1 < n; ++i) push_pair(i);
  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    int left = top.pos;
    if (ids[size_t(left)] < 0) continue;
    int right = next[size_t(left)];
    if (right < 0) continue;
    // Stale entry: one side merged since it was queued, so the pair may now be different.
    auto it = merges_.find(pair_key(ids[size_t(left)], ids[size_t(right)]));
    if (it == merges_.end() || it->second.new_id != top.new_id || it->second.rank != top.rank)
      continue;
    ids[size_t(left)] = top.new_id;
    ids[size_t(right)] = -1;
    next[size_t(left)] = next[size_t(right)];
    if (next[size_t(right)] >= 0) prev[size_t(next[size_t(right)])] = left;
    if (prev[size_t(left)] >= 0) push_pair(prev[size_t(left)]);
    push_pair(left);
  }
  for (int i = 0; i >= 0; i = next[size_t(i)]) out.push_back(ids[size_t(i)]);
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    auto it = vocab_.find(std::string(word));
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard lock(cache_->mutex);
    auto it = cache_->words.find(std::string(word));
    if (it != cache_->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t start = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::lock_guard lock(cache_->mutex);
    if (cache_->words.size() >= kMaxCachedWords) cache_->words.clear();
    cache_->words.emplace(std::string(word),
                          std::vector<int32_t>(out.begin() + long(start), out.end()));
  }
}

}  // namespace relayllm
