// The entry point the benchmarks share: an error ends the run with one line on stderr,
// named by the benchmark, and exit status 1.
#pragma once

#include <cstdio>
#include <exception>

namespace relayllm::bench {

template <typename Run>
int run_main(const char* name, Run&& run) {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}

}  // namespace relayllm::bench
