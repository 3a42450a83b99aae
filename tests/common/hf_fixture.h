// One HF fixture (tests/data/hf_fixtures/NAME): the model, and per sequence the input ids and
// the logits transformers computed for every position.
#pragma once

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "paged_forward.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"

namespace relayllm::testing {

struct HfFixture {
  ModelConfig config;
  ModelWeights weights;
  std::vector<std::vector<int32_t>> inputs;
  std::vector<std::vector<std::vector<float>>> logits;  // [sequence][position][vocab]
};

inline HfFixture load_hf_fixture(const std::string& name) {
  HfFixture f;
  f.config = parse_model_config(fixture_dir(name) / "config.json");
  f.weights = load_weights(fixture_dir(name), f.config);
  std::ifstream in(fixture_dir(name) / "expected.json");
  nlohmann::json expected = nlohmann::json::parse(in);
  for (const auto& seq : expected["sequences"]) {
    f.inputs.push_back(seq["input_ids"].get<std::vector<int32_t>>());
    f.logits.push_back(seq["logits"].get<std::vector<std::vector<float>>>());
  }
  return f;
}

}  // namespace relayllm::testing
