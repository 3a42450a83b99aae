// cuBLASLt, opened at run time. The library ships only as a large shared object;
// loading it on demand keeps every relayllm binary free of a link-time dependency on
// it, so a CPU-only run never needs it and a missing library is one clear error.
#pragma once

#include <cublasLt.h>

#include <string>

namespace relayllm::cuda {

struct CublasLtApi {
  decltype(&cublasLtCreate) create = nullptr;
  decltype(&cublasLtDestroy) destroy = nullptr;
  decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
  decltype(&cublasLtMatmulDescDestroy) desc_destroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) layout_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
  decltype(&cublasLtMatmul) matmul = nullptr;
  void* handle = nullptr;
  std::string path;
};

// Opens libcublasLt (RELAYLLM_CUBLASLT overrides the name) or throws Error.
const CublasLtApi& cublaslt_api();

}  // namespace relayllm::cuda
