#include "relayllm/engine/output_processor.h"

#include <algorithm>

namespace relayllm {

OutputProcessor::OutputProcessor(const Tokenizer& tokenizer, std::vector<int32_t> eos_token_ids,
                                 int32_t max_model_len)
    : tokenizer_(tokenizer), eos_ids_(std::move(eos_token_ids)), max_model_len_(max_model_len) {}

void OutputProcessor::start(Sequence& seq) const {
  seq.detokenizer = std::make_unique<IncrementalDetokenizer>(tokenizer_, seq.prompt_ids,
                                                             seq.params.skip_special_tokens);
}

std::optional<std::string> OutputProcessor::append(Sequence& seq, int32_t token) const {
  const SamplingParams& p = seq.params;
  seq.output_ids.push_back(token);
  const int32_t generated = int32_t(seq.output_ids.size());

  size_t old_size = seq.text.size();
  std::string piece = seq.detokenizer->push(token);
  bool eos = std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end();
  bool stop_token =
      std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) != p.stop_token_ids.end();
  std::optional<std::string> reason;
  if (generated >= p.min_tokens) {
    if ((eos && !p.ignore_eos) || stop_token) reason = "stop";
  }
  if (!reason) {
    seq.text += piece;
    if (generated >= p.min_tokens && !p.stop.empty()) {
      if (auto match = seq.stop_checker.apply(seq.text, seq.text.size() - old_size)) {
        seq.stop_reason = std::string(match->stop);
        reason = "stop";
      }
    }
  }
  if (!reason && (generated >= p.max_tokens || seq.total_len() >= max_model_len_))
    reason = "length";
  if (reason && *reason == "length") seq.text += seq.detokenizer->flush();
  return reason;
}

std::string OutputProcessor::take_stable_text(Sequence& seq) const {
  size_t stable = seq.text.size();
  if (!seq.finished()) stable -= seq.stop_checker.hold_back(seq.text);
  if (stable <= seq.text_emitted) return {};
  std::string out = seq.text.substr(seq.text_emitted, stable - seq.text_emitted);
  seq.text_emitted = stable;
  return out;
}

}  // namespace relayllm
