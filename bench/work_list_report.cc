// Where the attention benchmark's time goes, by the work list's own count (no GPU
// needed): for every configuration of an attention_bench results file, the units
// the backend cuts relay and paged attention into, the stages the busiest CTA runs
// (claims in list order, a unit costing its stages plus one), the floor's bytes per
// such stage and CTA, and the partials' extra bytes; with the measured times, the
// microseconds per stage against a stage's time at the measured copy bandwidth
// (a full stage, 64 tokens of K and V, per CTA of the grid). A stage that takes
// longer than that is slow in itself; a configuration whose bytes per stage fall
// short of a full stage loses to the cut (short units, the tail).
//
// Usage: work_list_report RESULTS.jsonl [--sms N (132)] [--ctas-per-sm N (2)]
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "bench_main.h"
#include "decode_plans.h"
#include "relayllm/backend/cuda/attention_work.h"

namespace relayllm {
namespace {

int run(int argc, char** argv) {
  RELAYLLM_CHECK(argc >= 2, "usage: work_list_report RESULTS.jsonl [--sms N] [--ctas-per-sm N]");
  int sms = 132, ctas_per_sm = 2;
  for (int i = 2; i < argc; ++i) {
    const std::string k = argv[i];
    RELAYLLM_CHECK(i + 1 < argc, "work_list_report: {} needs a value", k);
    if (k == "--sms")
      sms = std::stoi(argv[++i]);
    else if (k == "--ctas-per-sm")
      ctas_per_sm = std::stoi(argv[++i]);
    else
      fail("work_list_report: unknown argument '{}'", k);
  }
  std::ifstream in(argv[1]);
  RELAYLLM_CHECK(in.good(), "work_list_report: cannot open {}", argv[1]);
  const int64_t ctas = int64_t(sms) * ctas_per_sm;
  // A full stage: 64 tokens of K and V of one head, bf16.
  const double stage_bytes = 2.0 * 64 * bench::kHeadDim * 2;
  double bw = 0;
  std::printf(
      "| shape | B | P | own | relay units | makespan | KiB/stage/CTA | partial MB | us/stage | "
      "paged units | makespan | KiB/stage/CTA | us/stage "
      "|\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
      "---:|---:|---:|---:|\n");
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    const nlohmann::json row = nlohmann::json::parse(line, nullptr, false);
    RELAYLLM_CHECK(row.is_object(), "{}:{}: not a JSON object", argv[1], line_no);
    if (row.value("kind", "") == "copy") bw = row.at("copy_bw_gbs").get<double>() * 1e9;
    if (row.value("kind", "") != "ours") continue;
    const bench::Shape shape = bench::shape_named(row.at("shape").get<std::string>());
    const int batch = row.at("batch"), prefix = row.at("prefix"), own = row.at("own");
    cuda::AttentionWorkOptions options;
    options.num_heads = shape.hq;
    options.num_kv_heads = shape.hk;
    options.num_sms = sms;
    options.items_per_sm = row.value("items_per_sm", 8);
    options.min_split = row.value("min_split", 64);
    std::string cells;
    for (bool relay : {true, false}) {
      const BatchPlan plan = bench::decode_plan(batch, prefix, own, relay);
      const cuda::AttentionWorkSummary s =
          cuda::summarize(cuda::build_attention_work(plan, options), ctas, bench::kHeadDim);
      const double bytes = row.at(relay ? "relay_bytes" : "paged_bytes").get<double>();
      const double ms = row.at(relay ? "relay_ms" : "paged_ms").get<double>();
      const double per_stage = s.makespan_stages > 0 ? bytes / double(s.makespan_stages * ctas) : 0;
      cells += fmt::format(" {} | {} | {:.1f} |", s.units, s.makespan_stages, per_stage / 1024);
      if (relay) cells += fmt::format(" {:.2f} |", s.partial_bytes / 1e6);
      cells += s.makespan_stages > 0
                   ? fmt::format(" {:.2f} |", ms * 1e3 / double(s.makespan_stages))
                   : " - |";
    }
    std::printf("| %s | %d | %d | %d |%s\n", shape.name, batch, prefix, own, cells.c_str());
  }
  if (bw > 0)
    std::printf(
        "\nA full stage on every CTA at the measured copy bandwidth (%.0f GB/s): %.2f us per "
        "stage.\n",
        bw / 1e9, stage_bytes * double(ctas) / bw * 1e6);
  return 0;
}

}  // namespace
}  // namespace relayllm

int main(int argc, char** argv) {
  return relayllm::bench::run_main("work_list_report", [&] { return relayllm::run(argc, argv); });
}
