// Read-only access to GGUF files (llama.cpp's single-file model format, versions 2
// and 3) through mmap. The header, metadata and tensor table are parsed and
// validated up front; tensor data stays in the page cache until dequantized.
//
// Layout (all little-endian): "GGUF", u32 version, u64 tensor_count, u64 kv_count,
// kv_count x {string key, u32 value_type, value}, tensor_count x {string name,
// u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset}, padding to
// general.alignment (default 32), then the data section. A string is u64 length +
// bytes; an array is u32 element type + u64 count + elements. dims[0] is the
// fastest-varying axis (the reverse of a row-major shape).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "relayllm/formats/safetensors.h"

namespace relayllm {

enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
const char* gguf_value_type_name(GgufValueType type);

// ggml tensor types by their on-disk number. Only some are dequantizable (see gguf_dequant.h);
// the rest are named so errors can say what a file holds.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
};
// "Q4_K", ...; nullptr for a number that is no ggml type.
const char* ggml_type_name(GgmlType type);
// Elements per block and bytes per block; {0, 0} for a type this engine cannot size.
struct GgmlBlockLayout {
  int64_t block_elements = 0;
  int64_t block_bytes = 0;
};
GgmlBlockLayout ggml_block_layout(GgmlType type);

// One metadata value. Scalars are held widened; arrays keep their element type.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  GgufValueType element_type = GgufValueType::kUint8;  // arrays only
  uint64_t u = 0;                                      // unsigned integers and bool
  int64_t i = 0;                                       // signed integers
  double f = 0;                                        // floats
  std::string s;
  std::vector<GgufValue> array;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // GGUF order: dims[0] is contiguous
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;  // relative to the data section
  std::span<const std::byte> bytes;

  int64_t numel() const;
  // Row-major shape as HF writes it (dims reversed).
  std::vector<int64_t> shape() const;
};

class GgufFile {
 public:
  // Maps and validates: magic, version 2 or 3, every key, value type and tensor record
  // within the file, known tensor types, data of each tensor inside the file. Throws Error
  // naming the file and the field or tensor.
  explicit GgufFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_.path(); }
  std::string source() const { return file_.path().filename().string(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }

  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;
  bool contains(const std::string& key) const { return find(key) != nullptr; }

  // Typed getters: the require_* throw "<file>: missing metadata key <key>" or name the wrong
  // type; the get_* return nullopt for a missing key but still check the type.
  std::optional<std::string> get_string(const std::string& key) const;
  std::optional<uint64_t> get_uint(const std::string& key) const;  // any non-negative integer
  std::optional<double> get_float(const std::string& key) const;   // any number
  std::optional<bool> get_bool(const std::string& key) const;
  std::string require_string(const std::string& key) const;
  uint64_t require_uint(const std::string& key) const;
  double require_float(const std::string& key) const;
  // An array of strings / of numbers; nullptr when the key is missing.
  const std::vector<GgufValue>* get_array(const std::string& key, GgufValueType element_type) const;
  std::vector<std::string> string_array(const std::string& key) const;  // required
  std::vector<double> number_array(const std::string& key) const;       // required

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;

 private:
  MappedFile file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// True when the file at `path` starts with the GGUF magic.
bool is_gguf_file(const std::filesystem::path& path);

}  // namespace relayllm
