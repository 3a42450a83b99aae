#include "relayllm/serving/structured_output.h"

#include "relayllm/common/error.h"
#include "relayllm/common/json_fields.h"

namespace relayllm {
namespace {

using structured::ConstraintKind;
using structured::ConstraintSpec;

const nlohmann::json* present(const nlohmann::json& body, const char* key) {
  auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

// A schema given as an object or as its JSON text (vLLM takes both for guided_json).
std::string schema_text(const nlohmann::json& value, const std::string& field) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() || value.is_boolean()) return value.dump();
  fail("field '{}' must be a JSON schema (an object), got {}", field, value.type_name());
}

std::string string_field(const nlohmann::json& value, const std::string& field) {
  if (!value.is_string()) fail("field '{}' must be a string, got {}", field, value.type_name());
  return value.get<std::string>();
}

std::optional<ConstraintSpec> read_response_format(const nlohmann::json& rf) {
  if (!rf.is_object()) fail("field 'response_format' must be an object, got {}", rf.type_name());
  auto type_it = rf.find("type");
  if (type_it == rf.end() || !type_it->is_string())
    fail(
        "field 'response_format.type' must be one of text, json_object, json_schema, "
        "structural_tag");
  const std::string type = type_it->get<std::string>();
  ConstraintSpec spec;
  if (type == "text") return std::nullopt;
  if (type == "json_object") {
    spec.kind = ConstraintKind::kJsonObject;
    spec.field = "response_format";
    return spec;
  }
  if (type == "json_schema") {
    const nlohmann::json* js = present(rf, "json_schema");
    if (!js || !js->is_object())
      fail("field 'response_format.json_schema' must be an object with 'name' and 'schema'");
    if (const nlohmann::json* name = present(*js, "name"))
      string_field(*name, "response_format.json_schema.name");
    if (const nlohmann::json* strict = present(*js, "strict"); strict && !strict->is_boolean())
      fail("field 'response_format.json_schema.strict' must be a boolean, got {}",
           strict->type_name());
    const nlohmann::json* schema = present(*js, "schema");
    if (!schema) {
      // OpenAI's schema is optional; without one any JSON object will do.
      spec.kind = ConstraintKind::kJsonObject;
      spec.field = "response_format.json_schema";
      return spec;
    }
    spec.kind = ConstraintKind::kJsonSchema;
    spec.field = "response_format.json_schema.schema";
    spec.text = schema_text(*schema, spec.field);
    return spec;
  }
  if (type == "structural_tag") {
    // vLLM's shape: {"type": "structural_tag", "structures": [{"begin", "schema", "end"}],
    // "triggers": [...]}.
    spec.kind = ConstraintKind::kStructuralTag;
    spec.field = "response_format";
    const nlohmann::json* structures = present(rf, "structures");
    if (!structures || !structures->is_array())
      fail("field 'response_format.structures' must be a list of {{begin, schema, end}}");
    for (size_t i = 0; i < structures->size(); ++i) {
      const auto& s = (*structures)[i];
      const std::string where = fmt::format("response_format.structures[{}]", i);
      if (!s.is_object()) fail("field '{}' must be an object", where);
      structured::StructuralTag tag;
      tag.begin = string_field(s.value("begin", nlohmann::json()), where + ".begin");
      tag.end = string_field(s.value("end", nlohmann::json()), where + ".end");
      const nlohmann::json* schema = present(s, "schema");
      if (!schema) fail("field '{}.schema' is required", where);
      tag.schema = schema_text(*schema, where + ".schema");
      spec.tags.push_back(std::move(tag));
    }
    const nlohmann::json* triggers = present(rf, "triggers");
    if (!triggers || !triggers->is_array())
      fail("field 'response_format.triggers' must be a list of strings");
    for (size_t i = 0; i < triggers->size(); ++i)
      spec.triggers.push_back(
          string_field((*triggers)[i], fmt::format("response_format.triggers[{}]", i)));
    return spec;
  }
  fail(
      "field 'response_format.type' is '{}'; expected text, json_object, json_schema or "
      "structural_tag",
      type);
}

}  // namespace

std::optional<ConstraintSpec> read_constraint_spec(const nlohmann::json& body) {
  std::vector<std::pair<std::string, ConstraintSpec>> found;
  if (const nlohmann::json* rf = present(body, "response_format"))
    if (auto spec = read_response_format(*rf)) found.emplace_back("response_format", *spec);
  if (const nlohmann::json* v = present(body, "guided_json")) {
    ConstraintSpec spec;
    spec.kind = ConstraintKind::kJsonSchema;
    spec.field = "guided_json";
    spec.text = schema_text(*v, spec.field);
    found.emplace_back("guided_json", std::move(spec));
  }
  if (const nlohmann::json* v = present(body, "guided_regex")) {
    ConstraintSpec spec;
    spec.kind = ConstraintKind::kRegex;
    spec.field = "guided_regex";
    spec.text = string_field(*v, spec.field);
    found.emplace_back("guided_regex", std::move(spec));
  }
  if (const nlohmann::json* v = present(body, "guided_choice")) {
    ConstraintSpec spec;
    spec.kind = ConstraintKind::kChoice;
    spec.field = "guided_choice";
    if (!v->is_array())
      fail("field 'guided_choice' must be a list of strings, got {}", v->type_name());
    for (size_t i = 0; i < v->size(); ++i)
      spec.choices.push_back(string_field((*v)[i], fmt::format("guided_choice[{}]", i)));
    found.emplace_back("guided_choice", std::move(spec));
  }
  if (const nlohmann::json* v = present(body, "guided_grammar")) {
    ConstraintSpec spec;
    spec.kind = ConstraintKind::kEbnf;
    spec.field = "guided_grammar";
    spec.text = string_field(*v, spec.field);
    found.emplace_back("guided_grammar", std::move(spec));
  }
  if (present(body, "guided_whitespace_pattern"))
    fail(
        "field 'guided_whitespace_pattern' is not supported: the xgrammar backend has no "
        "whitespace pattern (JSON is compact by default; "
        "guided_decoding_backend \"xgrammar:any-whitespace\" allows any whitespace)");
  bool any_whitespace = false;
  if (const nlohmann::json* v = present(body, "guided_decoding_backend")) {
    // vLLM's spelling: "name" or "name:option,option".
    const std::string backend = string_field(*v, "guided_decoding_backend");
    const size_t colon = backend.find(':');
    const std::string name = backend.substr(0, colon);
    if (name != "xgrammar" && name != "auto")
      fail("field 'guided_decoding_backend' is '{}'; only xgrammar (and auto) are available", name);
    if (colon != std::string::npos) {
      std::string options = backend.substr(colon + 1);
      size_t start = 0;
      while (start <= options.size()) {
        size_t comma = options.find(',', start);
        std::string option = options.substr(start, comma - start);
        if (option == "disable-any-whitespace")
          any_whitespace = false;
        else if (option == "any-whitespace")
          any_whitespace = true;
        else if (!option.empty() && option != "no-fallback")
          fail(
              "field 'guided_decoding_backend': unknown option '{}' (known: "
              "any-whitespace, disable-any-whitespace, no-fallback)",
              option);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    }
  }
  if (found.size() > 1)
    fail("fields '{}' and '{}' both constrain the output; give only one", found[0].first,
         found[1].first);
  if (found.empty()) return std::nullopt;
  found[0].second.any_whitespace = any_whitespace;
  return found[0].second;
}

std::shared_ptr<const structured::CompiledConstraint> compile_constraint(
    const ConstraintSpec& spec, structured::GrammarCompiler* compiler) {
  if (!compiler) fail("field '{}': structured output is not available in this engine", spec.field);
  return compiler->compile(spec);
}

std::vector<std::vector<int32_t>> bad_words_token_ids(const nlohmann::json& value,
                                                      const Tokenizer& tokenizer) {
  if (!value.is_array())
    fail("field 'bad_words' must be a list of strings, got {}", value.type_name());
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i < value.size(); ++i) {
    std::string word = string_field(value[i], fmt::format("bad_words[{}]", i));
    const size_t first = word.find_first_not_of(" \t\n\r");
    word = first == std::string::npos ? std::string() : word.substr(first);
    if (word.empty()) fail("field 'bad_words[{}]' is empty", i);
    std::vector<int32_t> plain = tokenizer.encode(word, false);
    std::vector<int32_t> spaced = tokenizer.encode(" " + word, false);
    if (!plain.empty()) out.push_back(plain);
    if (!spaced.empty() && !plain.empty() && spaced[0] != plain[0] && spaced.size() == plain.size())
      out.push_back(std::move(spaced));
  }
  return out;
}

void read_structured_output(const nlohmann::json& body, const Tokenizer& tokenizer,
                            structured::GrammarCompiler* compiler, SamplingParams& params) {
  if (std::optional<ConstraintSpec> spec = read_constraint_spec(body))
    params.constraint = compile_constraint(*spec, compiler);
  if (const nlohmann::json* words = present(body, "bad_words"))
    params.bad_words_ids = bad_words_token_ids(*words, tokenizer);
}

}  // namespace relayllm
