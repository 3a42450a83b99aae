// relayllm._relayllm: the C++ half of the Python package. The Python side (python/relayllm)
// checks arguments, shapes vLLM's objects and shows progress; this module only moves data
// between Python and one Engine (llm_engine.h).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>

#include "llm_engine.h"
#include "relayllm/common/error.h"

namespace py = pybind11;
using relayllm::python::LlmEngine;

PYBIND11_MODULE(_relayllm, m) {
  m.doc() = "relayllm's engine, in-process (use relayllm.LLM)";
  // The engine logs as the CLI does: to stderr (stdout is the user's), at the level of
  // RELAYLLM_LOG_LEVEL (trace, debug, info, warn, error, critical, off; default info).
  if (!spdlog::get("relayllm")) spdlog::set_default_logger(spdlog::stderr_color_mt("relayllm"));
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  if (const char* level = std::getenv("RELAYLLM_LOG_LEVEL"); level && *level)
    spdlog::set_level(spdlog::level::from_str(level));
  // The engine's errors are one line naming the bad input (field, value, file): ValueError.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const relayllm::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  py::class_<LlmEngine>(m, "Engine")
      .def(py::init<const py::dict&>(), py::arg("options"))
      .def("shutdown", &LlmEngine::shutdown)
      .def("alive", &LlmEngine::alive)
      .def("generate", &LlmEngine::generate, py::arg("requests"), py::arg("progress"))
      .def("encode", &LlmEngine::encode, py::arg("text"), py::arg("add_special_tokens"))
      .def("encode_prompt", &LlmEngine::encode_prompt, py::arg("text"))
      .def("decode", &LlmEngine::decode, py::arg("ids"), py::arg("skip_special_tokens"))
      .def("render_chat", &LlmEngine::render_chat, py::arg("messages"),
           py::arg("add_generation_prompt"), py::arg("chat_template"), py::arg("kwargs"))
      .def("encode_chat", &LlmEngine::encode_chat, py::arg("messages"),
           py::arg("add_generation_prompt"), py::arg("chat_template"), py::arg("kwargs"))
      .def("fill_prefix", &LlmEngine::fill_prefix, py::arg("text"), py::arg("ids"))
      .def("register_prefix", &LlmEngine::register_prefix, py::arg("name"), py::arg("ids"))
      .def("remove_prefix", &LlmEngine::remove_prefix, py::arg("name"))
      .def("prefixes", &LlmEngine::prefixes)
      .def("stats", &LlmEngine::stats)
      .def("info", &LlmEngine::info)
      .def("default_sampling", &LlmEngine::default_sampling);
}
