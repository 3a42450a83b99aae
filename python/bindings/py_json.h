// Python objects <-> JSON values, so that the Python side's sampling fields, chat messages
// and template arguments go through the engine's own JSON readers (serving/request_parser,
// engine/sampling_params): one parse and one set of error messages for the CLI, the server
// and the package.
#pragma once

#include <pybind11/pybind11.h>

#include <nlohmann/json.hpp>
#include <string>

namespace relayllm::python {

// None, bool, int, float, str, list/tuple and dict with str keys; TypeError naming `what`
// (and the path inside it) for anything else.
nlohmann::json to_json(pybind11::handle value, const std::string& what);

pybind11::object from_json(const nlohmann::json& value);

}  // namespace relayllm::python
