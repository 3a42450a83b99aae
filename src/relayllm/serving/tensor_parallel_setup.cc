#include "relayllm/serving/tensor_parallel_setup.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <optional>
#include <vector>

#include "relayllm/common/error.h"
#include "relayllm/dist/build_id.h"
#include "relayllm/dist/communicator.h"
#include "relayllm/dist/mpi_loader.h"
#include "relayllm/formats/gguf_file.h"
#include "relayllm/model/gguf_model.h"
#include "relayllm/model/tensor_parallel.h"
#include "relayllm/serving/default_model.h"
#include "relayllm/serving/engine_builder.h"

namespace relayllm {

namespace {

ModelConfig model_config_of(const std::filesystem::path& path) {
  if (std::filesystem::is_regular_file(path)) return gguf_model_config(GgufFile(path));
  return parse_model_config(path / "config.json");
}

}  // namespace

void check_tensor_parallel_model(const EngineOptions& options) {
  std::optional<ModelConfig> config;
  if (!options.model.empty()) {
    config = model_config_of(options.model);
  } else {
    std::vector<std::filesystem::path> venvs(options.default_model_venvs.begin(),
                                             options.default_model_venvs.end());
    if (auto gguf = find_default_gguf(venvs))
      config = model_config_of(*gguf);
    else
      config = make_embedded_default_model(options.seed).loaded.config;  // tiny, in memory
  }
  shard_layout(*config, 0, options.tensor_parallel_size);  // throws the one-line reason
}

std::shared_ptr<Communicator> join_tensor_parallel(int size) {
  RELAYLLM_CHECK(size >= 1, "--tensor-parallel-size {} must be at least 1", size);
  if (size == 1) return nullptr;
  RELAYLLM_CHECK(launched_by_mpi(),
                 "--tensor-parallel-size {}: this process is not a rank of an MPI job; run it "
                 "through `relayllm serve|generate` (which starts mpirun itself) or "
                 "`mpirun -np {} relayllm ...`",
                 size, size);
  std::shared_ptr<Communicator> comm = load_mpi_communicator();
  if (comm->size() != size) {
    const int ranks = comm->size();
    comm.reset();
    fail("mpirun started {} ranks but --tensor-parallel-size is {}: start exactly as many ranks",
         ranks, size);
  }
  check_same_build(*comm, executable_build_id());
  if (comm->rank() == 0)
    spdlog::info("tensor parallelism: {} ranks over {}, {} on this host", comm->size(),
                 comm->name(), comm->local_size());
  return comm;
}

}  // namespace relayllm
