#include "py_json.h"

#include <fmt/format.h>

namespace py = pybind11;

namespace relayllm::python {
namespace {

constexpr int kMaxDepth = 64;  // as the server's JSON bodies

nlohmann::json convert(py::handle value, const std::string& path, int depth) {
  if (depth > kMaxDepth) throw py::value_error(fmt::format("{}: nested too deeply", path));
  if (value.is_none()) return nullptr;
  // bool before int: Python's bool is an int.
  if (py::isinstance<py::bool_>(value)) return value.cast<bool>();
  if (py::isinstance<py::int_>(value)) {
    try {
      return value.cast<int64_t>();
    } catch (const py::cast_error&) {
      throw py::value_error(fmt::format("{}: integer out of range", path));
    }
  }
  if (py::isinstance<py::float_>(value)) return value.cast<double>();
  if (py::isinstance<py::str>(value)) return value.cast<std::string>();
  if (py::isinstance<py::list>(value) || py::isinstance<py::tuple>(value)) {
    nlohmann::json out = nlohmann::json::array();
    size_t i = 0;
    for (py::handle item : value)
      out.push_back(convert(item, fmt::format("{}[{}]", path, i++), depth + 1));
    return out;
  }
  if (py::isinstance<py::dict>(value)) {
    nlohmann::json out = nlohmann::json::object();
    for (auto [key, item] : value.cast<py::dict>()) {
      if (!py::isinstance<py::str>(key))
        throw py::type_error(fmt::format("{}: keys must be str, got {}", path,
                                         std::string(py::str(py::type::of(key).attr("__name__")))));
      std::string name = key.cast<std::string>();
      out[name] = convert(item, fmt::format("{}.{}", path, name), depth + 1);
    }
    return out;
  }
  throw py::type_error(fmt::format("{}: unsupported type {}", path,
                                   std::string(py::str(py::type::of(value).attr("__name__")))));
}

}  // namespace

nlohmann::json to_json(py::handle value, const std::string& what) {
  return convert(value, what, 0);
}

py::object from_json(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null:
      return py::none();
    case nlohmann::json::value_t::boolean:
      return py::bool_(value.get<bool>());
    case nlohmann::json::value_t::number_integer:
      return py::int_(value.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned:
      return py::int_(value.get<uint64_t>());
    case nlohmann::json::value_t::number_float:
      return py::float_(value.get<double>());
    case nlohmann::json::value_t::string:
      return py::str(value.get_ref<const std::string&>());
    case nlohmann::json::value_t::array: {
      py::list out;
      for (const auto& item : value) out.append(from_json(item));
      return out;
    }
    case nlohmann::json::value_t::object: {
      py::dict out;
      for (const auto& [key, item] : value.items()) out[py::str(key)] = from_json(item);
      return out;
    }
    default:
      return py::none();
  }
}

}  // namespace relayllm::python
