// Read-only access to .safetensors checkpoints through mmap: the header is parsed
// and validated up front, tensor data stays in the page cache until converted.
// Format: 8-byte little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the
// data section, offsets relative to its start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace relayllm {

// Element types the loader converts; every other safetensors dtype is kOther
// (its bytes are validated but it cannot be converted).
enum class SafetensorsDType { kF32, kF16, kBF16, kOther };

// Owns one read-only mapping of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

struct TensorView {
  std::string name;
  SafetensorsDType dtype = SafetensorsDType::kOther;
  std::string dtype_name;  // as written in the header: "F32", "BF16", "I64", ...
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;             // points into the mapping; may be unaligned
  const std::filesystem::path* file = nullptr;  // the file the data lives in

  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps and validates: header length within the file, JSON well formed, known dtypes,
  // data_offsets inside the data section and matching shape x dtype size.
  explicit SafetensorsFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_.path(); }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(std::string_view name) const;  // nullptr when absent

 private:
  MappedFile file_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
};

// A model folder's weights: model.safetensors, or model.safetensors.index.json with
// its shards (weight_map: tensor name -> shard file name).
class SafetensorsCheckpoint {
 public:
  explicit SafetensorsCheckpoint(const std::filesystem::path& model_dir);

  const TensorView* find(std::string_view name) const;  // nullptr when absent
  // What to name in errors about a missing tensor: the single file or the index.
  const std::filesystem::path& source() const { return source_; }
  std::vector<std::string> tensor_names() const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  size_t total_bytes() const;

 private:
  std::filesystem::path source_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*, std::less<>> tensors_;
};

// Converts F32/F16/BF16 to fp32; throws Error naming the tensor for other dtypes.
std::vector<float> to_float(const TensorView& view);
// The same for elements [begin, end) into out[0 .. end-begin), so callers can split
// large tensors across threads.
void to_float(const TensorView& view, size_t begin, size_t end, float* out);

}  // namespace relayllm
