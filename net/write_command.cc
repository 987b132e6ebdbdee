#include "net/write_command.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>

namespace kvstore::net {

namespace {

// Format (little-endian): u8 kind, then three lists (compares, success,
// failure), each a u32 count of (u8 kind, u32 key length, key, u32 value
// length, value). Lengths fit u32: keys and values are far below 4 GiB.
// An op of kind 3 is a set with a vector: u32 dimension and as many
// float32 follow its value. Entries written before it existed never hold
// kind 3, so old logs decode as they did.
constexpr uint8_t kWireSetWithVector = 3;
void PutU32(std::string* out, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>(v >> (8 * i));
  out->append(b, 4);
}

void PutBytes(std::string* out, std::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s);
}

struct Cursor {
  std::string_view in;
  bool ok = true;
  uint32_t U32() {
    if (in.size() < 4) {
      ok = false;
      return 0;
    }
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(in[i])) << (8 * i);
    in.remove_prefix(4);
    return v;
  }
  uint8_t U8() {
    if (in.empty()) {
      ok = false;
      return 0;
    }
    uint8_t v = static_cast<uint8_t>(in[0]);
    in.remove_prefix(1);
    return v;
  }
  std::string Bytes() {
    uint32_t n = U32();
    if (!ok || in.size() < n) {
      ok = false;
      return {};
    }
    std::string s(in.substr(0, n));
    in.remove_prefix(n);
    return s;
  }
};

template <class T>
void PutList(std::string* out, const std::vector<T>& list) {
  PutU32(out, static_cast<uint32_t>(list.size()));
  for (const T& e : list) {
    bool with_vector = false;
    if constexpr (std::is_same_v<T, WriteCommand::Op>) with_vector = e.kind == WriteCommand::Op::kSet && !e.vector.empty();
    out->push_back(static_cast<char>(with_vector ? kWireSetWithVector : static_cast<uint8_t>(e.kind)));
    PutBytes(out, e.key);
    PutBytes(out, e.value);
    if constexpr (std::is_same_v<T, WriteCommand::Op>) {
      if (with_vector) {
        PutU32(out, static_cast<uint32_t>(e.vector.size()));
        out->append(reinterpret_cast<const char*>(e.vector.data()), e.vector.size() * sizeof(float));
      }
    }
  }
}

template <class T>
bool GetList(Cursor* c, std::vector<T>* list, uint8_t max_kind) {
  uint32_t n = c->U32();
  // Each entry takes at least 9 bytes: a bound that stops a corrupt count
  // from reserving gigabytes.
  if (!c->ok || n > c->in.size() / 9) return false;
  list->resize(n);
  for (T& e : *list) {
    uint8_t k = c->U8();
    bool with_vector = false;
    if constexpr (std::is_same_v<T, WriteCommand::Op>) {
      if (k == kWireSetWithVector) {
        with_vector = true;
        k = WriteCommand::Op::kSet;
      }
    }
    if (k > max_kind) return false;
    e.kind = static_cast<typename T::Kind>(k);
    e.key = c->Bytes();
    e.value = c->Bytes();
    if constexpr (std::is_same_v<T, WriteCommand::Op>) {
      if (with_vector) {
        const uint32_t n = c->U32();
        if (!c->ok || n == 0 || c->in.size() / sizeof(float) < n) return false;
        e.vector.resize(n);
        std::memcpy(e.vector.data(), c->in.data(), size_t{n} * sizeof(float));
        c->in.remove_prefix(size_t{n} * sizeof(float));
      }
    }
  }
  return c->ok;
}

}  // namespace

// After the lists, optional trailers, each a u8 tag and its bytes; entries
// written before request ids existed have none.
constexpr uint8_t kTrailerRequestId = 1;

std::string EncodeWriteCommand(const WriteCommand& command) {
  std::string out;
  out.push_back(static_cast<char>(command.kind));
  PutList(&out, command.compares);
  PutList(&out, command.success);
  PutList(&out, command.failure);
  if (!command.request_id.empty()) {
    out.push_back(static_cast<char>(kTrailerRequestId));
    PutBytes(&out, command.request_id);
  }
  return out;
}

bool DecodeWriteCommand(std::string_view data, WriteCommand* command) {
  Cursor c{data};
  uint8_t kind = c.U8();
  if (!c.ok || kind < static_cast<uint8_t>(WriteCommand::Kind::kSet) ||
      kind > static_cast<uint8_t>(WriteCommand::Kind::kTxn)) {
    return false;
  }
  command->kind = static_cast<WriteCommand::Kind>(kind);
  command->request_id.clear();
  if (!GetList(&c, &command->compares, WriteCommand::Compare::kMissing) ||
      !GetList(&c, &command->success, WriteCommand::Op::kDelete) ||
      !GetList(&c, &command->failure, WriteCommand::Op::kDelete)) {
    return false;
  }
  if (!c.in.empty()) {
    if (c.U8() != kTrailerRequestId) return false;
    command->request_id = c.Bytes();
    if (!c.ok || command->request_id.empty()) return false;
  }
  return c.in.empty();
}

ReplicaAnswer EvaluateWriteCommand(const WriteCommand& command, const CommandReader& read,
                                   CommandOverlay* overlay, WriteBatch* batch) {
  Status failed;
  auto current = [&](const std::string& key) -> std::optional<std::string> {
    auto it = overlay->find(key);
    if (it != overlay->end()) return it->second;
    std::optional<std::string> v;
    Status s = read(key, &v);
    if (!s.ok() && failed.ok()) failed = s;
    return v;
  };
  bool ok = true;
  for (const WriteCommand::Compare& c : command.compares) {
    std::optional<std::string> cur = current(c.key);
    switch (c.kind) {
      case WriteCommand::Compare::kEq: ok = cur && *cur == c.value; break;
      case WriteCommand::Compare::kNe: ok = !cur || *cur != c.value; break;
      case WriteCommand::Compare::kExists: ok = cur.has_value(); break;
      case WriteCommand::Compare::kMissing: ok = !cur.has_value(); break;
    }
    if (!ok) break;
  }
  const std::vector<WriteCommand::Op>& ops = ok ? command.success : command.failure;
  // Later ops see earlier ones of the same command, as in etcd; writes land
  // in the batch only once every read has succeeded.
  CommandOverlay mine;
  std::string results = "[";
  std::optional<std::string> last_get;
  for (size_t i = 0; i < ops.size(); ++i) {
    const WriteCommand::Op& o = ops[i];
    if (i > 0) results += ',';
    if (o.kind == WriteCommand::Op::kGet) {
      auto it = mine.find(o.key);
      last_get = it != mine.end() ? it->second : current(o.key);
      results += last_get ? "{\"found\":true,\"value\":" + *last_get + "}" : "{\"found\":false}";
    } else {
      mine[o.key] = o.kind == WriteCommand::Op::kSet ? std::optional<std::string>(o.value) : std::nullopt;
      results += "null";
    }
  }
  results += ']';
  if (!failed.ok()) return ReplicaAnswer::Error("internal", failed.ToString());
  for (const WriteCommand::Op& o : ops) {
    if (o.kind == WriteCommand::Op::kSet && !o.vector.empty()) {
      batch->PutWithVector(o.key, o.value, o.vector);
    } else if (o.kind == WriteCommand::Op::kSet) {
      batch->Put(o.key, o.value);
    } else if (o.kind == WriteCommand::Op::kDelete) {
      batch->Delete(o.key);
    }
  }
  for (auto& [k, v] : mine) (*overlay)[k] = std::move(v);
  switch (command.kind) {
    case WriteCommand::Kind::kSet:
    case WriteCommand::Kind::kDelete:
      return ReplicaAnswer::Ok("null");
    case WriteCommand::Kind::kBulkSet:
      return ReplicaAnswer::Ok("{\"count\":" + std::to_string(command.success.size()) + "}");
    case WriteCommand::Kind::kCas:
      if (ok) return ReplicaAnswer::Ok("null");
      return ReplicaAnswer::Error("conflict",
                                  last_get ? "the current value differs" : "the key is absent",
                                  last_get ? "{\"current\":" + *last_get + "}" : "");
    case WriteCommand::Kind::kTxn:
      break;
  }
  return ReplicaAnswer::Ok(std::string("{\"succeeded\":") + (ok ? "true" : "false") +
                           ",\"results\":" + results + "}");
}

namespace {

const std::string kRequestPrefix = "\xff\xffkvstore/req/";
const std::string kRequestSlotPrefix = "\xff\xffkvstore/reqslot/";
const std::string kRequestCountKey = "\xff\xffkvstore/reqcount";

// A stored answer: u8 ok, then the result, or the code, message and extra.
std::string EncodeAnswer(const ReplicaAnswer& a) {
  std::string out(1, a.ok() ? '\1' : '\0');
  if (a.ok()) {
    PutBytes(&out, a.result);
  } else {
    PutBytes(&out, a.error_code);
    PutBytes(&out, a.error_message);
    PutBytes(&out, a.error_extra);
  }
  return out;
}

bool DecodeAnswer(std::string_view data, ReplicaAnswer* a) {
  Cursor c{data};
  const uint8_t ok = c.U8();
  if (ok == 1) {
    *a = ReplicaAnswer::Ok(c.Bytes());
  } else {
    std::string code = c.Bytes();
    std::string message = c.Bytes();
    *a = ReplicaAnswer::Error(std::move(code), std::move(message), c.Bytes());
  }
  return c.ok && c.in.empty() && ok <= 1;
}

}  // namespace

ReplicaAnswer EvaluateOnce(const WriteCommand& command, const CommandReader& read, CommandOverlay* overlay,
                           WriteBatch* batch, uint64_t remembered) {
  if (command.request_id.empty()) return EvaluateWriteCommand(command, read, overlay, batch);
  Status failed;
  auto current = [&](const std::string& key) -> std::optional<std::string> {
    auto it = overlay->find(key);
    if (it != overlay->end()) return it->second;
    std::optional<std::string> v;
    Status s = read(key, &v);
    if (!s.ok() && failed.ok()) failed = s;
    return v;
  };
  auto put = [&](const std::string& key, std::string value) {
    batch->Put(key, value);
    (*overlay)[key] = std::move(value);
  };
  const std::string key = kRequestPrefix + command.request_id;
  if (std::optional<std::string> prev = current(key)) {
    ReplicaAnswer a;
    if (DecodeAnswer(*prev, &a)) return a;
    return ReplicaAnswer::Error("internal", "the stored answer of request_id is damaged");
  }
  const std::optional<std::string> count_text = current(kRequestCountKey);
  if (!failed.ok()) return ReplicaAnswer::Error("internal", failed.ToString());
  ReplicaAnswer answer = EvaluateWriteCommand(command, read, overlay, batch);
  uint64_t count = 0;
  if (count_text) count = std::strtoull(count_text->c_str(), nullptr, 10);
  // The slot this id takes held the id remembered `remembered` ids ago:
  // that one is forgotten now, the same way on every replica.
  const std::string slot = kRequestSlotPrefix + std::to_string(count % std::max<uint64_t>(remembered, 1));
  if (std::optional<std::string> evicted = current(slot)) {
    batch->Delete(kRequestPrefix + *evicted);
    (*overlay)[kRequestPrefix + *evicted] = std::nullopt;
  }
  if (!failed.ok()) return ReplicaAnswer::Error("internal", failed.ToString());
  put(slot, command.request_id);
  put(kRequestCountKey, std::to_string(count + 1));
  put(key, EncodeAnswer(answer));
  return answer;
}

}  // namespace kvstore::net
