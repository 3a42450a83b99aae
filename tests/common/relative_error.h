// The relative L2 error the model and op tests bound their results with.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace relayllm::testing {

// ||got - want|| / ||want||; infinite when got holds a NaN or infinity.
inline double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

}  // namespace relayllm::testing
