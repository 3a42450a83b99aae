#include "relayllm/formats/safetensors.h"

#include <fcntl.h>
#include <fmt/ranges.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "relayllm/common/bounded_json.h"
#include "relayllm/common/error.h"
#include "relayllm/common/half.h"
#include "relayllm/common/json_fields.h"

namespace relayllm {
namespace {

struct DTypeInfo {
  SafetensorsDType dtype;
  size_t bytes;
};

// Every dtype the safetensors format defines with a whole-byte element size; names
// outside this table are rejected as unknown.
bool lookup_dtype(const std::string& name, DTypeInfo& info) {
  static const std::map<std::string, DTypeInfo, std::less<>> kTable = {
      {"F32", {SafetensorsDType::kF32, 4}},       {"F16", {SafetensorsDType::kF16, 2}},
      {"BF16", {SafetensorsDType::kBF16, 2}},     {"F64", {SafetensorsDType::kOther, 8}},
      {"I64", {SafetensorsDType::kOther, 8}},     {"U64", {SafetensorsDType::kOther, 8}},
      {"I32", {SafetensorsDType::kOther, 4}},     {"U32", {SafetensorsDType::kOther, 4}},
      {"I16", {SafetensorsDType::kOther, 2}},     {"U16", {SafetensorsDType::kOther, 2}},
      {"I8", {SafetensorsDType::kOther, 1}},      {"U8", {SafetensorsDType::kOther, 1}},
      {"BOOL", {SafetensorsDType::kOther, 1}},    {"F8_E4M3", {SafetensorsDType::kOther, 1}},
      {"F8_E5M2", {SafetensorsDType::kOther, 1}}, {"F8_E8M0", {SafetensorsDType::kOther, 1}},
  };
  auto it = kTable.find(name);
  if (it == kTable.end()) return false;
  info = it->second;
  return true;
}

uint64_t read_le64(const std::byte* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | uint64_t(p[i]);
  return value;
}

// Tensors must not share bytes (the format's own reader refuses that too): aliased weights
// mean the header does not describe the data.
void check_no_overlap(const std::vector<TensorView>& tensors, const std::string& where) {
  std::vector<const TensorView*> order;
  for (const TensorView& t : tensors)
    if (!t.bytes.empty()) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(), [](const TensorView* a, const TensorView* b) {
    return a->bytes.data() < b->bytes.data();
  });
  for (size_t i = 1; i < order.size(); ++i) {
    const TensorView &prev = *order[i - 1], &next = *order[i];
    if (next.bytes.data() < prev.bytes.data() + prev.bytes.size())
      fail("{}: the data_offsets of tensors {} and {} overlap", where, prev.name, next.name);
  }
}

}  // namespace

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail("{}: cannot stat: {}", path.string(), std::strerror(err));
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* mapped = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapped == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      fail("{}: mmap of {} bytes failed: {}", path.string(), size_, std::strerror(err));
    }
    data_ = static_cast<const std::byte*>(mapped);
  }
  ::close(fd);  // the mapping keeps the file alive
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : file_(path) {
  const std::string where = path.filename().string();
  const size_t file_size = file_.size();
  if (file_size < 8)
    fail("{}: file too short for a safetensors header ({} bytes)", where, file_size);
  const uint64_t header_size = read_le64(file_.data());
  if (header_size > file_size - 8)
    fail("{}: header length {} exceeds the file size {} (truncated or not a safetensors file)",
         where, header_size, file_size);
  const std::byte* header_begin = file_.data() + 8;
  const size_t data_size = file_size - 8 - size_t(header_size);
  const std::byte* data_begin = header_begin + header_size;

  nlohmann::json header = parse_bounded_json(
      std::string_view(reinterpret_cast<const char*>(header_begin), size_t(header_size)),
      where + " header");
  if (!header.is_object()) fail("{}: header is not a JSON object", where);

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    if (!entry.is_object()) fail("{}: tensor {} header entry is not an object", where, name);
    TensorView view;
    view.name = name;
    view.file = &file_.path();
    std::optional<std::string> dtype =
        json_fields::get_string(entry, "dtype", where + " tensor " + name);
    if (!dtype) fail("{}: tensor {} has no dtype", where, name);
    DTypeInfo info{};
    if (!lookup_dtype(*dtype, info))
      fail("{}: tensor {} has unknown dtype \"{}\"", where, name, *dtype);
    view.dtype = info.dtype;
    view.dtype_name = *dtype;

    auto shape = entry.find("shape");
    if (shape == entry.end() || !shape->is_array())
      fail("{}: tensor {} has no shape list", where, name);
    uint64_t numel = 1;
    for (const nlohmann::json& dim : *shape) {
      if (!dim.is_number_integer() || dim.get<int64_t>() < 0)
        fail("{}: tensor {} has an invalid shape {}", where, name, shape->dump());
      view.shape.push_back(dim.get<int64_t>());
      uint64_t d = uint64_t(dim.get<int64_t>());
      if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / d)
        fail("{}: tensor {} shape {} is too large", where, name, shape->dump());
      numel *= d;
    }

    auto offsets = entry.find("data_offsets");
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned())
      fail("{}: tensor {} needs data_offsets [begin, end]", where, name);
    uint64_t begin = (*offsets)[0].get<uint64_t>(), end = (*offsets)[1].get<uint64_t>();
    if (begin > end || end > data_size)
      fail(
          "{}: tensor {} data_offsets [{}, {}] fall outside the data section of {} bytes "
          "(truncated file?)",
          where, name, begin, end, data_size);
    if (end - begin != numel * info.bytes)
      fail("{}: tensor {} data_offsets [{}, {}] hold {} bytes, but shape [{}] of {} needs {}",
           where, name, begin, end, end - begin, fmt::join(view.shape, ", "), *dtype,
           numel * info.bytes);
    view.bytes = std::span<const std::byte>(data_begin + begin, size_t(end - begin));
    index_.emplace(name, tensors_.size());
    tensors_.push_back(std::move(view));
  }
  check_no_overlap(tensors_, where);
}

const TensorView* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::filesystem::path& model_dir) {
  const std::filesystem::path single = model_dir / "model.safetensors";
  const std::filesystem::path index = model_dir / "model.safetensors.index.json";
  if (std::filesystem::exists(single)) {
    source_ = single;
    files_.push_back(std::make_unique<SafetensorsFile>(single));
    for (const TensorView& view : files_.back()->tensors()) tensors_.emplace(view.name, &view);
    return;
  }
  if (!std::filesystem::exists(index))
    fail("{}: no model.safetensors or model.safetensors.index.json in the model folder",
         model_dir.string());
  source_ = index;
  const std::string where = index.filename().string();
  nlohmann::json json = json_fields::read_json_file(index);
  auto weight_map = json.find("weight_map");
  if (!json.is_object() || weight_map == json.end() || !weight_map->is_object())
    fail("{}: missing object field weight_map", where);

  std::map<std::string, SafetensorsFile*> shards;
  for (const auto& [name, shard] : weight_map->items()) {
    if (!shard.is_string()) fail("{}: weight_map entry {} is not a file name", where, name);
    const std::string shard_name = shard.get<std::string>();
    // Shard names are plain file names next to the index; refuse paths that leave the folder.
    if (shard_name.empty() || shard_name.find('/') != std::string::npos || shard_name == "..")
      fail("{}: weight_map entry {} names an invalid shard \"{}\"", where, name, shard_name);
    auto it = shards.find(shard_name);
    if (it == shards.end()) {
      std::filesystem::path shard_path = model_dir / shard_name;
      if (!std::filesystem::exists(shard_path))
        fail("{}: shard {} (holding tensor {}) does not exist", where, shard_name, name);
      files_.push_back(std::make_unique<SafetensorsFile>(shard_path));
      it = shards.emplace(shard_name, files_.back().get()).first;
    }
    const TensorView* view = it->second->find(name);
    if (!view)
      fail("{}: tensor {} is listed in {} but missing from the shard", shard_name, name, where);
    tensors_.emplace(name, view);
  }
}

const TensorView* SafetensorsCheckpoint::find(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

std::vector<std::string> SafetensorsCheckpoint::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) names.push_back(name);
  return names;
}

size_t SafetensorsCheckpoint::total_bytes() const {
  size_t total = 0;
  for (const auto& [name, view] : tensors_) total += view->bytes.size();
  return total;
}

void to_float(const TensorView& view, size_t begin, size_t end, float* out) {
  const std::byte* src = view.bytes.data();
  switch (view.dtype) {
    case SafetensorsDType::kF32:
      // An empty tensor has no data pointer, and memcpy's pointers must not be null.
      if (end > begin) std::memcpy(out, src + begin * 4, (end - begin) * 4);
      return;
    case SafetensorsDType::kBF16:
    case SafetensorsDType::kF16: {
      const bool bf16 = view.dtype == SafetensorsDType::kBF16;
      for (size_t i = begin; i < end; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + i * 2, 2);  // data may be unaligned
        out[i - begin] = bf16 ? bf16_to_float(bits) : fp16_to_float(bits);
      }
      return;
    }
    case SafetensorsDType::kOther:
      break;
  }
  fail("{}: tensor {} has dtype {}, which cannot be converted to float (need F32, F16 or BF16)",
       view.file ? view.file->filename().string() : std::string("?"), view.name, view.dtype_name);
}

std::vector<float> to_float(const TensorView& view) {
  std::vector<float> out(size_t(view.numel()));
  to_float(view, 0, out.size(), out.data());
  return out;
}

}  // namespace relayllm
