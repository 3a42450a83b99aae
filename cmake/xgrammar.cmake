# xgrammar (Apache-2.0), the grammar engine behind constrained decoding, compiled from the
# C++ sources of its pinned PyPI source distribution, which scripts/install_deps.sh fetches
# into .deps/. Only the library: no Python bindings (nanobind), no tests, no cpptrace. It is a
# target of our own rather than its CMakeLists.txt, which adds -Werror and -flto=auto to every
# file of the directory (warnings of a newer compiler then break the build, and LTO costs
# minutes on two cores).
set(RELAYLLM_XGRAMMAR_VERSION 0.1.19)
set(RELAYLLM_XGRAMMAR_DIR "${PROJECT_SOURCE_DIR}/.deps/xgrammar-${RELAYLLM_XGRAMMAR_VERSION}"
  CACHE PATH "Unpacked xgrammar source distribution")
if(NOT EXISTS "${RELAYLLM_XGRAMMAR_DIR}/include/xgrammar/xgrammar.h")
  message(FATAL_ERROR "xgrammar ${RELAYLLM_XGRAMMAR_VERSION} sources not found in ${RELAYLLM_XGRAMMAR_DIR}: "
    "run scripts/install_deps.sh (it fetches them) or pass -DRELAYLLM_XGRAMMAR_DIR=DIR")
endif()
file(GLOB RELAYLLM_XGRAMMAR_SOURCES "${RELAYLLM_XGRAMMAR_DIR}/cpp/*.cc" "${RELAYLLM_XGRAMMAR_DIR}/cpp/support/*.cc")

# One change to its grammar compiler, made on a copy in the build folder (the unpacked sources
# stay as the sdist has them): the token-mask scan rejects a run of tokens that share a
# rejected first byte at once (cmake/xgrammar/bulk_reject.inc says why). Same masks, faster
# compiles. The anchor line must exist, so a different xgrammar version fails here, loudly.
set(_xg_original "${RELAYLLM_XGRAMMAR_DIR}/cpp/grammar_compiler.cc")
set(_xg_insert_file "${PROJECT_SOURCE_DIR}/cmake/xgrammar/bulk_reject.inc")
file(READ "${_xg_original}" _xg_source)
file(READ "${_xg_insert_file}" _xg_insert)
set(_xg_anchor "    bool can_reach_end = tmp_can_reach_end_prefix_or_stack_.back();")
string(FIND "${_xg_source}" "${_xg_anchor}" _xg_at)
if(_xg_at EQUAL -1)
  message(FATAL_ERROR "${_xg_original}: the line cmake/xgrammar/bulk_reject.inc goes before is missing")
endif()
string(REPLACE "${_xg_anchor}" "${_xg_insert}${_xg_anchor}" _xg_source "${_xg_source}")
string(REPLACE "#include <cstddef>" "#include <algorithm>\n#include <cstddef>" _xg_source "${_xg_source}")
set(_xg_patched "${CMAKE_BINARY_DIR}/xgrammar-patched/grammar_compiler.cc")
file(WRITE "${_xg_patched}.new" "${_xg_source}")
# Rewritten only when it changes, so a reconfigure does not recompile it.
configure_file("${_xg_patched}.new" "${_xg_patched}" COPYONLY)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${_xg_original}" "${_xg_insert_file}")
list(REMOVE_ITEM RELAYLLM_XGRAMMAR_SOURCES "${_xg_original}")
list(APPEND RELAYLLM_XGRAMMAR_SOURCES "${_xg_patched}")

add_library(relayllm_xgrammar STATIC ${RELAYLLM_XGRAMMAR_SOURCES})
# The patched copy includes its neighbours ("grammar_matcher_base.h") from the build folder.
target_include_directories(relayllm_xgrammar PRIVATE "${RELAYLLM_XGRAMMAR_DIR}/cpp")
set_target_properties(relayllm_xgrammar PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON
  POSITION_INDEPENDENT_CODE ON)
target_include_directories(relayllm_xgrammar PUBLIC "${RELAYLLM_XGRAMMAR_DIR}/include")
target_include_directories(relayllm_xgrammar SYSTEM PUBLIC
  "${RELAYLLM_XGRAMMAR_DIR}/3rdparty/picojson" "${RELAYLLM_XGRAMMAR_DIR}/3rdparty/dlpack/include")
target_compile_definitions(relayllm_xgrammar PUBLIC XGRAMMAR_ENABLE_CPPTRACE=0)
# Third-party code: its warnings are not ours to fix.
target_compile_options(relayllm_xgrammar PRIVATE -w)
target_link_libraries(relayllm_xgrammar PUBLIC Threads::Threads)
# Sanitized and fuzzing builds instrument our code, not this third-party library: the fuzzers
# do not target it, and instrumenting its template-heavy sources is a large share of the
# sanitized build's time on two cores. Calls into it from our code stay checked on our side.
if(RELAYLLM_SANITIZE OR RELAYLLM_BUILD_FUZZERS)
  get_target_property(relayllm_xgrammar_options relayllm_xgrammar COMPILE_OPTIONS)
  list(FILTER relayllm_xgrammar_options EXCLUDE REGEX "^-fsanitize")
  set_target_properties(relayllm_xgrammar PROPERTIES COMPILE_OPTIONS "${relayllm_xgrammar_options}")
endif()
# The left-recursion check (structured/left_recursion.cc) walks xgrammar's grammar
# representation, which only its internal headers declare.
set_source_files_properties(${PROJECT_SOURCE_DIR}/src/relayllm/structured/left_recursion.cc
  PROPERTIES INCLUDE_DIRECTORIES "${RELAYLLM_XGRAMMAR_DIR}/cpp")
