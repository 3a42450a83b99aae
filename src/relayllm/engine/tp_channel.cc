#include "relayllm/engine/tp_channel.h"

#include <cstring>
#include <type_traits>

#include "relayllm/common/error.h"
#include "relayllm/dist/communicator.h"

namespace relayllm {
namespace {

// Plain little-endian copies of trivially copyable values: every rank runs the same
// binary (checked at start-up, dist/build_id.h), so layouts agree.
class Writer {
 public:
  template <typename T>
  void put(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const uint8_t*>(&value);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  template <typename T>
  void put_vector(const std::vector<T>& values) {
    static_assert(std::is_trivially_copyable_v<T>);
    put(uint64_t(values.size()));
    const auto* p = reinterpret_cast<const uint8_t*>(values.data());
    out_.insert(out_.end(), p, p + values.size() * sizeof(T));
  }
  std::vector<uint8_t> take() { return std::move(out_); }

 private:
  std::vector<uint8_t> out_;
};

class Reader {
 public:
  explicit Reader(const std::vector<uint8_t>& in) : in_(in) {}
  template <typename T>
  T get() {
    T value;
    take(&value, sizeof(T));
    return value;
  }
  template <typename T>
  std::vector<T> get_vector() {
    const uint64_t n = get<uint64_t>();
    RELAYLLM_CHECK(n <= (in_.size() - pos_) / sizeof(T),
                   "tensor-parallel message: a list of {} entries overruns the {} bytes", n,
                   in_.size());
    std::vector<T> values(n);
    take(values.data(), n * sizeof(T));
    return values;
  }
  bool done() const { return pos_ == in_.size(); }

 private:
  void take(void* dst, size_t bytes) {
    RELAYLLM_CHECK(bytes <= in_.size() - pos_, "tensor-parallel message: truncated at byte {}",
                   pos_);
    if (bytes) std::memcpy(dst, in_.data() + pos_, bytes);
    pos_ += bytes;
  }
  const std::vector<uint8_t>& in_;
  size_t pos_ = 0;
};

}  // namespace

std::vector<uint8_t> encode_tp_message(const TpMessage& m) {
  Writer w;
  w.put(m.kind);
  if (m.kind == TpMessage::Kind::kInit) w.put(m.init);
  if (m.kind == TpMessage::Kind::kStep) {
    w.put(m.policy);
    const BatchPlan& p = m.plan;
    w.put(p.block_size);
    w.put_vector(p.token_ids);
    w.put_vector(p.positions);
    w.put_vector(p.slot_mapping);
    w.put_vector(p.sequences);
    w.put_vector(p.block_tables);
    w.put_vector(p.logit_rows);
    w.put(uint64_t(p.prefix_groups.size()));
    for (const PlannedPrefixGroup& g : p.prefix_groups) {
      w.put(g.prefix_len);
      w.put(g.block_table_start);
      w.put(g.num_blocks);
      w.put(g.parent);
      w.put_vector(g.query_rows);
    }
  }
  return w.take();
}

TpMessage decode_tp_message(const std::vector<uint8_t>& bytes) {
  Reader r(bytes);
  TpMessage m;
  m.kind = r.get<TpMessage::Kind>();
  switch (m.kind) {
    case TpMessage::Kind::kInit:
      m.init = r.get<TpInit>();
      break;
    case TpMessage::Kind::kStep: {
      m.policy = r.get<GraphPolicy>();
      BatchPlan& p = m.plan;
      p.block_size = r.get<int32_t>();
      p.token_ids = r.get_vector<int32_t>();
      p.positions = r.get_vector<int32_t>();
      p.slot_mapping = r.get_vector<int64_t>();
      p.sequences = r.get_vector<PlannedSequence>();
      p.block_tables = r.get_vector<int32_t>();
      p.logit_rows = r.get_vector<int32_t>();
      const uint64_t groups = r.get<uint64_t>();
      RELAYLLM_CHECK(groups <= bytes.size(), "tensor-parallel message: {} relay groups", groups);
      p.prefix_groups.resize(groups);
      for (PlannedPrefixGroup& g : p.prefix_groups) {
        g.prefix_len = r.get<int32_t>();
        g.block_table_start = r.get<int32_t>();
        g.num_blocks = r.get<int32_t>();
        g.parent = r.get<int32_t>();
        g.query_rows = r.get_vector<int32_t>();
      }
      break;
    }
    case TpMessage::Kind::kStop:
      break;
    default:
      fail("tensor-parallel message: unknown kind {}", int(m.kind));
  }
  RELAYLLM_CHECK(r.done(), "tensor-parallel message: {} bytes left over", bytes.size());
  return m;
}

TpChannel::TpChannel(std::shared_ptr<Communicator> comm) : comm_(std::move(comm)) {}

void TpChannel::stop() {
  if (stopped_) return;
  stopped_ = true;
  TpMessage message;
  message.kind = TpMessage::Kind::kStop;
  send(message);
}

void TpChannel::send(const TpMessage& message) {
  RELAYLLM_CHECK(!stopped_ || message.kind == TpMessage::Kind::kStop,
                 "tensor parallelism: a step after the other ranks were stopped");
  buffer_ = encode_tp_message(message);
  uint64_t size = buffer_.size();
  comm_->broadcast_idle(&size, sizeof size, 0);
  comm_->broadcast(buffer_.data(), buffer_.size(), 0);
}

TpMessage TpChannel::receive() {
  uint64_t size = 0;
  comm_->broadcast_idle(&size, sizeof size, 0);
  buffer_.resize(size);
  comm_->broadcast(buffer_.data(), size, 0);
  return decode_tp_message(buffer_);
}

}  // namespace relayllm
