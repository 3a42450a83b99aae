// The object behind relayllm.LLM: one Engine built by serving/engine_builder from the
// same options as the CLI's engine flags, driven in-process the way `relayllm generate`
// drives it (add every request, step until all finish), with the GIL released while it
// runs. Python threads may share one LlmEngine: a mutex serializes the calls, and it is
// always taken with the GIL released (a caller waiting for it never holds the GIL the
// running call needs for its progress callback).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "relayllm/chat/chat_template.h"
#include "relayllm/serving/engine_builder.h"

namespace relayllm::python {

class LlmEngine {
 public:
  // `options`: the engine options by their Python names (see options_from_dict in the .cc);
  // the Python wrapper has checked their types and ranges.
  explicit LlmEngine(const pybind11::dict& options);
  ~LlmEngine();

  // Frees the engine (weights, KV pool, threads); later calls raise RuntimeError.
  void shutdown();
  bool alive() const;

  // Runs a batch to completion. `requests`: one tuple per prompt,
  // (text or None, token ids or None, sampling fields dict or None, n, auto_prefix_len,
  // complete): text goes through the system-prompt schema like `relayllm generate`'s
  // --prompt; ids are taken as they are (after the fill_prefix prefix unless `complete`). Returns
  // one dict per prompt (see the .cc). ValueError "prompt I: ..." when a prompt cannot run (nothing
  // runs then); KeyboardInterrupt or the progress callback's exception aborts every request of the
  // batch and frees its blocks before it propagates.
  pybind11::list generate(const pybind11::list& requests, const pybind11::object& progress);

  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens);
  std::vector<int32_t> encode_prompt(const std::string& text);
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens);
  // Renders chat messages (a list of {"role", "content"} dicts) with the model's template,
  // or `chat_template` when not empty.
  std::string render_chat(const pybind11::handle& messages, bool add_generation_prompt,
                          const std::string& chat_template, const pybind11::handle& kwargs);
  // Renders and tokenizes one conversation as the server's chat endpoint does: (ids, length
  // of the rendered system part that may become an automatic relay prefix, rendered text).
  std::tuple<std::vector<int32_t>, int32_t, std::string> encode_chat(
      const pybind11::handle& messages, bool add_generation_prompt,
      const std::string& chat_template, const pybind11::handle& kwargs);

  // vllm-ra's fill_prefix_kv_cache: later prompts are the shared prefix followed by the
  // prompt. Text: the schema's system part becomes `text`; ids: the prefix itself. With
  // relay on, the prefix's KV is computed now as the relay prefix "system". Returns the
  // prefix's token count.
  int32_t fill_prefix(const std::optional<std::string>& text,
                      const std::optional<std::vector<int32_t>>& ids);
  int32_t register_prefix(const std::string& name, const std::vector<int32_t>& ids);
  void remove_prefix(const std::string& name);
  pybind11::list prefixes();
  pybind11::dict stats();
  pybind11::dict info();
  // The model's sampling defaults (generation_config.json; greedy for the default model).
  pybind11::dict default_sampling();

 private:
  Engine& engine();  // RuntimeError once shut down; call with mutex_ held
  std::vector<int32_t> prompt_from_text(const std::string& text) const;

  mutable std::mutex mutex_;
  ServingEngine serving_;
  SamplingParams defaults_;
  std::optional<ChatTemplate> chat_template_;
  std::string chat_template_error_;
  // Set by fill_prefix: every later prompt starts with these ids.
  std::optional<std::vector<int32_t>> filled_prefix_;
};

}  // namespace relayllm::python
