// The CPU backend's kernels for weights kept in GGUF block formats, in the scheme
// llama.cpp uses: each activation row is quantized per block of 32 values to int8 with
// one fp32 scale, and a weight row is dotted with it in integer arithmetic, block by
// block, then scaled in fp32. One table of kernels per instruction set; the table is
// chosen once at run time from CPUID (select_quant_kernels), so one binary runs on any
// x86-64 and uses what the CPU has.
//
// This header is included by the per-ISA translation units (compiled with -mavx2 or
// -mavx512*), so it holds only plain structs and declarations: an inline function or
// template here could be emitted with AVX instructions and picked by the linker for
// every caller.
#pragma once

#include <cstdint>

namespace relayllm::cpu_quant {

// One block of 32 activation values: x[i] ~= d * qs[i], d = max|x| / 127.
// `s` = d * sum(qs) serves the weight formats with an offset (Q4_1's min, the K-quants'
// mins); sum16 holds the sums of qs over each half (Q6_K has one scale per 16 values).
struct ActBlock {
  float d;
  float s;
  int16_t sum16[2];
  int8_t qs[32];
};
constexpr int kActBlock = 32;

// Dots one weight row of `k` values (whole blocks of its format) with a quantized
// activation row of k / 32 blocks.
using QuantDotFn = float (*)(int64_t k, const void* weight_row, const ActBlock* x);
// Dots one 16-bit float weight row (F16 or BF16) with an fp32 activation row.
using HalfDotFn = float (*)(int64_t k, const void* weight_row, const float* x);
using QuantizeRowFn = void (*)(const float* x, int64_t k, ActBlock* out);
// The fp16 KV cache: y[0, n) += a * v[0, n) for a row v of F16 values (attention's value
// sum), and fp32 -> F16 of a row with round-to-nearest-even (what write_kv stores; every
// table rounds identically, so the stored cache does not depend on the CPU).
using HalfAxpyFn = void (*)(int64_t n, float a, const void* v, float* y);
using ToHalfRowFn = void (*)(const float* x, int64_t n, void* out);

// Indexed by WeightFormat's value (kNone's slot is null).
constexpr int kNumWeightFormats = 9;

struct QuantKernels {
  const char* isa;  // "portable", "avx2", "avx512vnni"
  QuantizeRowFn quantize_row;
  QuantDotFn dot[kNumWeightFormats];
  HalfDotFn half_dot[kNumWeightFormats];
  HalfAxpyFn f16_axpy;
  ToHalfRowFn to_f16_row;
};

// The tables built into this binary; a table is usable only on a CPU that has its ISA.
const QuantKernels& portable_kernels();
#if defined(RELAYLLM_X86_KERNELS)
const QuantKernels& avx2_kernels();
const QuantKernels& avx512_kernels();
#endif

}  // namespace relayllm::cpu_quant
