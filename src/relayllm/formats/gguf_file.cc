#include "relayllm/formats/gguf_file.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "relayllm/common/error.h"

namespace relayllm {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
// Bounds that no real file reaches; they stop a corrupt count from allocating gigabytes.
constexpr uint64_t kMaxStringBytes = uint64_t(1) << 30;
constexpr uint32_t kMaxDims = 4;
constexpr int kMaxArrayNesting = 4;

// Reads the header sequentially; every read checks the bytes are there, so a truncated
// file fails with the field being read.
class Reader {
 public:
  Reader(const std::byte* data, size_t size, std::string source)
      : data_(data), size_(size), source_(std::move(source)) {}

  size_t position() const { return pos_; }

  template <typename T>
  T scalar(const std::string& what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  std::string string(const std::string& what) {
    uint64_t length = scalar<uint64_t>(what + " (length)");
    if (length > kMaxStringBytes) fail("{}: {} has a bad length {}", source_, what, length);
    need(size_t(length), what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(length));
    pos_ += size_t(length);
    return s;
  }

  [[noreturn]] void truncated(const std::string& what) const {
    fail("{}: file truncated while reading {} (offset {}, file size {})", source_, what, pos_,
         size_);
  }

 private:
  void need(size_t n, const std::string& what) const {
    if (n > size_ - pos_) truncated(what);
  }

  const std::byte* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string source_;
};

GgufValue read_value(Reader& in, GgufValueType type, const std::string& what,
                     const std::string& source, int depth) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufValueType::kUint8:
      v.u = in.scalar<uint8_t>(what);
      break;
    case GgufValueType::kInt8:
      v.i = in.scalar<int8_t>(what);
      break;
    case GgufValueType::kUint16:
      v.u = in.scalar<uint16_t>(what);
      break;
    case GgufValueType::kInt16:
      v.i = in.scalar<int16_t>(what);
      break;
    case GgufValueType::kUint32:
      v.u = in.scalar<uint32_t>(what);
      break;
    case GgufValueType::kInt32:
      v.i = in.scalar<int32_t>(what);
      break;
    case GgufValueType::kUint64:
      v.u = in.scalar<uint64_t>(what);
      break;
    case GgufValueType::kInt64:
      v.i = in.scalar<int64_t>(what);
      break;
    case GgufValueType::kFloat32:
      v.f = in.scalar<float>(what);
      break;
    case GgufValueType::kFloat64:
      v.f = in.scalar<double>(what);
      break;
    case GgufValueType::kBool: {
      uint8_t b = in.scalar<uint8_t>(what);
      if (b > 1) fail("{}: {} is a bool with value {}", source, what, b);
      v.u = b;
      break;
    }
    case GgufValueType::kString:
      v.s = in.string(what);
      break;
    case GgufValueType::kArray: {
      if (depth >= kMaxArrayNesting) fail("{}: {} nests arrays too deeply", source, what);
      uint32_t raw = in.scalar<uint32_t>(what + " (array element type)");
      if (raw > uint32_t(GgufValueType::kFloat64))
        fail("{}: {} has unknown array element type {}", source, what, raw);
      v.element_type = GgufValueType(raw);
      uint64_t count = in.scalar<uint64_t>(what + " (array length)");
      // Each element takes at least one byte, so a count beyond the file is corrupt.
      if (count > kMaxStringBytes * 8)
        fail("{}: {} has a bad array length {}", source, what, count);
      v.array.reserve(size_t(std::min<uint64_t>(count, 1 << 20)));
      for (uint64_t k = 0; k < count; ++k)
        v.array.push_back(
            read_value(in, v.element_type, fmt::format("{}[{}]", what, k), source, depth + 1));
      break;
    }
    default:
      fail("{}: {} has unknown value type {}", source, what, uint32_t(type));
  }
  return v;
}

bool is_integer(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
      return true;
    default:
      return false;
  }
}
bool is_signed(GgufValueType t) {
  return t == GgufValueType::kInt8 || t == GgufValueType::kInt16 || t == GgufValueType::kInt32 ||
         t == GgufValueType::kInt64;
}
bool is_float(GgufValueType t) {
  return t == GgufValueType::kFloat32 || t == GgufValueType::kFloat64;
}

double as_number(const GgufValue& v) {
  if (is_float(v.type)) return v.f;
  return is_signed(v.type) ? double(v.i) : double(v.u);
}

// Two tensors reading the same bytes make a file whose weights alias: no writer produces one,
// and accepting it would load a different model than the one the tensor table describes.
void check_no_overlap(const std::vector<GgufTensorInfo>& tensors, const std::string& source) {
  std::vector<const GgufTensorInfo*> order;
  for (const GgufTensorInfo& t : tensors)
    if (!t.bytes.empty()) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(),
                   [](const GgufTensorInfo* a, const GgufTensorInfo* b) {
                     return a->bytes.data() < b->bytes.data();
                   });
  for (size_t i = 1; i < order.size(); ++i) {
    const GgufTensorInfo &prev = *order[i - 1], &next = *order[i];
    if (next.bytes.data() < prev.bytes.data() + prev.bytes.size())
      fail("{}: the data of tensors {} and {} overlap (offsets {} and {}, {} bytes)", source,
           prev.name, next.name, prev.offset, next.offset, prev.bytes.size());
  }
}

}  // namespace

const char* gguf_value_type_name(GgufValueType type) {
  static const char* const kNames[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                       "int32",  "float32", "bool",   "string", "array",
                                       "uint64", "int64",   "float64"};
  uint32_t i = uint32_t(type);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

const char* ggml_type_name(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return "F32";
    case GgmlType::kF16:
      return "F16";
    case GgmlType::kQ4_0:
      return "Q4_0";
    case GgmlType::kQ4_1:
      return "Q4_1";
    case GgmlType::kQ5_0:
      return "Q5_0";
    case GgmlType::kQ5_1:
      return "Q5_1";
    case GgmlType::kQ8_0:
      return "Q8_0";
    case GgmlType::kQ8_1:
      return "Q8_1";
    case GgmlType::kQ2_K:
      return "Q2_K";
    case GgmlType::kQ3_K:
      return "Q3_K";
    case GgmlType::kQ4_K:
      return "Q4_K";
    case GgmlType::kQ5_K:
      return "Q5_K";
    case GgmlType::kQ6_K:
      return "Q6_K";
    case GgmlType::kQ8_K:
      return "Q8_K";
    case GgmlType::kIQ2_XXS:
      return "IQ2_XXS";
    case GgmlType::kIQ2_XS:
      return "IQ2_XS";
    case GgmlType::kIQ3_XXS:
      return "IQ3_XXS";
    case GgmlType::kIQ1_S:
      return "IQ1_S";
    case GgmlType::kIQ4_NL:
      return "IQ4_NL";
    case GgmlType::kIQ3_S:
      return "IQ3_S";
    case GgmlType::kIQ2_S:
      return "IQ2_S";
    case GgmlType::kIQ4_XS:
      return "IQ4_XS";
    case GgmlType::kI8:
      return "I8";
    case GgmlType::kI16:
      return "I16";
    case GgmlType::kI32:
      return "I32";
    case GgmlType::kI64:
      return "I64";
    case GgmlType::kF64:
      return "F64";
    case GgmlType::kIQ1_M:
      return "IQ1_M";
    case GgmlType::kBF16:
      return "BF16";
    case GgmlType::kTQ1_0:
      return "TQ1_0";
    case GgmlType::kTQ2_0:
      return "TQ2_0";
  }
  return nullptr;
}

GgmlBlockLayout ggml_block_layout(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return {1, 4};
    case GgmlType::kF16:
      return {1, 2};
    case GgmlType::kBF16:
      return {1, 2};
    case GgmlType::kQ4_0:
      return {32, 18};
    case GgmlType::kQ4_1:
      return {32, 20};
    case GgmlType::kQ5_0:
      return {32, 22};
    case GgmlType::kQ5_1:
      return {32, 24};
    case GgmlType::kQ8_0:
      return {32, 34};
    case GgmlType::kQ8_1:
      return {32, 36};
    case GgmlType::kQ2_K:
      return {256, 84};
    case GgmlType::kQ3_K:
      return {256, 110};
    case GgmlType::kQ4_K:
      return {256, 144};
    case GgmlType::kQ5_K:
      return {256, 176};
    case GgmlType::kQ6_K:
      return {256, 210};
    case GgmlType::kQ8_K:
      return {256, 292};
    case GgmlType::kI8:
      return {1, 1};
    case GgmlType::kI16:
      return {1, 2};
    case GgmlType::kI32:
      return {1, 4};
    case GgmlType::kI64:
      return {1, 8};
    case GgmlType::kF64:
      return {1, 8};
    default:
      return {0, 0};
  }
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::vector<int64_t> GgufTensorInfo::shape() const {
  return std::vector<int64_t>(dims.rbegin(), dims.rend());
}

bool is_gguf_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  uint32_t magic = 0;
  if (!in.read(reinterpret_cast<char*>(&magic), sizeof magic)) return false;
  return magic == kMagic;
}

GgufFile::GgufFile(const std::filesystem::path& path) : file_(path) {
  const std::string src = source();
  Reader in(file_.data(), file_.size(), src);
  uint32_t magic = in.scalar<uint32_t>("the magic");
  if (magic != kMagic)
    fail("{}: bad magic 0x{:08x}: not a GGUF file (expected \"GGUF\")", src, magic);
  version_ = in.scalar<uint32_t>("the version");
  if (version_ != 2 && version_ != 3)
    fail("{}: unsupported GGUF version {} (supported: 2, 3)", src, version_);
  uint64_t tensor_count = in.scalar<uint64_t>("the tensor count");
  uint64_t kv_count = in.scalar<uint64_t>("the metadata count");
  // Each record takes well over one byte; larger counts are corrupt, not big.
  if (tensor_count > file_.size() || kv_count > file_.size())
    fail("{}: bad header counts (tensor_count {}, kv_count {})", src, tensor_count, kv_count);

  for (uint64_t k = 0; k < kv_count; ++k) {
    std::string key = in.string(fmt::format("metadata key #{}", k));
    uint32_t raw = in.scalar<uint32_t>("the value type of metadata key " + key);
    if (raw > uint32_t(GgufValueType::kFloat64))
      fail("{}: metadata key {} has unknown value type {}", src, key, raw);
    GgufValue value = read_value(in, GgufValueType(raw), "metadata key " + key, src, 0);
    if (!metadata_.emplace(key, std::move(value)).second)
      fail("{}: metadata key {} appears twice", src, key);
  }
  if (auto align = get_uint("general.alignment")) {
    if (*align == 0 || (*align & (*align - 1)) != 0)
      fail("{}: metadata key general.alignment = {} is not a power of two", src, *align);
    alignment_ = *align;
  }

  tensors_.reserve(size_t(tensor_count));
  for (uint64_t k = 0; k < tensor_count; ++k) {
    GgufTensorInfo t;
    t.name = in.string(fmt::format("the name of tensor #{}", k));
    uint32_t n_dims = in.scalar<uint32_t>("the rank of tensor " + t.name);
    if (n_dims == 0 || n_dims > kMaxDims)
      fail("{}: tensor {} has rank {} (expected 1 to {})", src, t.name, n_dims, kMaxDims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim = in.scalar<uint64_t>("the shape of tensor " + t.name);
      if (dim == 0 || dim > (uint64_t(1) << 40))
        fail("{}: tensor {} has a bad dimension {}", src, t.name, dim);
      t.dims.push_back(int64_t(dim));
    }
    // numel() multiplies in int64: its product must not overflow (4 dims of 2^40 would).
    uint64_t numel = 1;
    for (int64_t d : t.dims)
      if (__builtin_mul_overflow(numel, uint64_t(d), &numel) || numel > (uint64_t(1) << 48))
        fail("{}: tensor {} has shape [{}], more elements than any file can hold", src, t.name,
             fmt::join(t.dims, ", "));
    uint32_t type = in.scalar<uint32_t>("the type of tensor " + t.name);
    t.type = GgmlType(type);
    const char* type_name = ggml_type_name(t.type);
    if (!type_name) fail("{}: tensor {} has unknown ggml type {}", src, t.name, type);
    t.offset = in.scalar<uint64_t>("the data offset of tensor " + t.name);
    if (!tensor_index_.emplace(t.name, tensors_.size()).second)
      fail("{}: tensor {} appears twice", src, t.name);
    tensors_.push_back(std::move(t));
  }

  const uint64_t data_start = (uint64_t(in.position()) + alignment_ - 1) / alignment_ * alignment_;
  for (GgufTensorInfo& t : tensors_) {
    GgmlBlockLayout layout = ggml_block_layout(t.type);
    if (layout.block_elements == 0)
      fail("{}: tensor {} has type {}, which is unsupported", src, t.name, ggml_type_name(t.type));
    if (t.dims[0] % layout.block_elements != 0)
      fail("{}: tensor {} of type {} has a first dimension {} that is not a multiple of {}", src,
           t.name, ggml_type_name(t.type), t.dims[0], layout.block_elements);
    if (t.offset % alignment_ != 0)
      fail("{}: tensor {} has data offset {}, not a multiple of the alignment {}", src, t.name,
           t.offset, alignment_);
    const uint64_t bytes =
        uint64_t(t.numel() / layout.block_elements) * uint64_t(layout.block_bytes);
    const uint64_t begin = data_start + t.offset;
    if (begin > file_.size() || bytes > file_.size() - begin)
      fail("{}: the data of tensor {} (bytes {}..{}) lies outside the file ({} bytes)", src, t.name,
           begin, begin + bytes, file_.size());
    t.bytes = std::span<const std::byte>(file_.data() + begin, size_t(bytes));
  }
  check_no_overlap(tensors_, src);
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

std::optional<std::string> GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::kString)
    fail("{}: metadata key {} is a {}, expected a string", source(), key,
         gguf_value_type_name(v->type));
  return v->s;
}

std::optional<uint64_t> GgufFile::get_uint(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (!is_integer(v->type))
    fail("{}: metadata key {} is a {}, expected an integer", source(), key,
         gguf_value_type_name(v->type));
  if (is_signed(v->type)) {
    if (v->i < 0) fail("{}: metadata key {} = {} must not be negative", source(), key, v->i);
    return uint64_t(v->i);
  }
  return v->u;
}

std::optional<double> GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (!is_integer(v->type) && !is_float(v->type))
    fail("{}: metadata key {} is a {}, expected a number", source(), key,
         gguf_value_type_name(v->type));
  return as_number(*v);
}

std::optional<bool> GgufFile::get_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::kBool)
    fail("{}: metadata key {} is a {}, expected a bool", source(), key,
         gguf_value_type_name(v->type));
  return v->u != 0;
}

std::string GgufFile::require_string(const std::string& key) const {
  auto v = get_string(key);
  if (!v) fail("{}: missing metadata key {}", source(), key);
  return *v;
}

uint64_t GgufFile::require_uint(const std::string& key) const {
  auto v = get_uint(key);
  if (!v) fail("{}: missing metadata key {}", source(), key);
  return *v;
}

double GgufFile::require_float(const std::string& key) const {
  auto v = get_float(key);
  if (!v) fail("{}: missing metadata key {}", source(), key);
  return *v;
}

const std::vector<GgufValue>* GgufFile::get_array(const std::string& key,
                                                  GgufValueType element_type) const {
  const GgufValue* v = find(key);
  if (!v) return nullptr;
  bool ok = v->type == GgufValueType::kArray &&
            (v->element_type == element_type ||
             (element_type == GgufValueType::kFloat64 &&
              (is_integer(v->element_type) || is_float(v->element_type))));
  if (!ok)
    fail("{}: metadata key {} is a {}{}, expected an array of {}", source(), key,
         gguf_value_type_name(v->type),
         v->type == GgufValueType::kArray
             ? fmt::format(" of {}", gguf_value_type_name(v->element_type))
             : std::string(),
         element_type == GgufValueType::kFloat64 ? "numbers" : gguf_value_type_name(element_type));
  return &v->array;
}

std::vector<std::string> GgufFile::string_array(const std::string& key) const {
  const auto* array = get_array(key, GgufValueType::kString);
  if (!array) fail("{}: missing metadata key {}", source(), key);
  std::vector<std::string> out;
  out.reserve(array->size());
  for (const GgufValue& v : *array) out.push_back(v.s);
  return out;
}

std::vector<double> GgufFile::number_array(const std::string& key) const {
  const auto* array = get_array(key, GgufValueType::kFloat64);
  if (!array) fail("{}: missing metadata key {}", source(), key);
  std::vector<double> out;
  out.reserve(array->size());
  for (const GgufValue& v : *array) out.push_back(as_number(v));
  return out;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace relayllm
