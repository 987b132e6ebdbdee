// KeyLocks: asynchronous striped reader/writer locks over keys.
//
// The engine has no transactions, so cas and txn get their atomicity here:
// every write op locks the stripes of the keys it touches from before its
// read until the DB::WriteAsync callback says the write is visible. Blind
// writes (set, delete, bulk_set) lock shared: they do not read, so they may
// run alongside each other and keep sharing one fsync even on a hot key.
// Read-modify-writes (cas, txn) lock exclusive, so no other write of those
// keys can land between their read and their write.
//
// The locks are asynchronous because the holder releases them on a DB
// thread, not the thread that took them (std::mutex forbids that), and
// because a waiting request must not block a server thread. Waiters are
// served first come, first served per stripe, so a stream of sets cannot
// starve a cas; stripes are taken in ascending order, so there is no
// deadlock.
//
// Thread safety: all methods may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string_view>
#include <vector>

namespace kvstore::net {

class KeyLocks {
 public:
  enum class Mode { kShared, kExclusive };

  // What a granted Acquire holds; hand it back to Release exactly once.
  // Shared holds taken one by one (TryAcquireOne) may also be released
  // together: their stripes concatenated, a stripe taken twice listed twice.
  struct Held {
    std::vector<uint32_t> stripes;  // ascending, unique (from Acquire)
    Mode mode = Mode::kShared;
  };

  // immediate is true when granted runs inside Acquire; false when it runs
  // later inside some other holder's Release (on that caller's thread, so it
  // should hand real work to an executor).
  using Granted = std::function<void(Held held, bool immediate)>;

  explicit KeyLocks(size_t stripes = 4096);
  KeyLocks(const KeyLocks&) = delete;
  KeyLocks& operator=(const KeyLocks&) = delete;

  void Acquire(const std::vector<std::string_view>& keys, Mode mode, Granted granted);
  // Acquire's common case without its callback: takes key's stripe at once
  // when it is free and nobody waits for it (so first come, first served
  // still holds), filling *held. False, holding nothing, otherwise.
  bool TryAcquireOne(std::string_view key, Mode mode, Held* held);
  void Release(const Held& held);

  // Requests queued behind a holder; for tests and stats.
  size_t waiting() const;

 private:
  struct Request {
    Held held;
    size_t next = 0;  // index into held.stripes of the first stripe not yet taken
    Granted granted;
  };
  struct Stripe {
    uint32_t shared = 0;
    bool exclusive = false;
    std::deque<Request*> queue;
  };

  static bool CompatibleLocked(const Stripe& s, Mode mode) {
    return !s.exclusive && (mode == Mode::kShared || s.shared == 0);
  }
  static void TakeLocked(Stripe& s, Mode mode) {
    if (mode == Mode::kShared) {
      ++s.shared;
    } else {
      s.exclusive = true;
    }
  }
  // Takes as many of r's remaining stripes as are free; true when all held.
  bool AdvanceLocked(Request* r);

  mutable std::mutex mu_;
  std::vector<Stripe> stripes_;  // guarded by mu_
  size_t waiting_ = 0;           // guarded by mu_
};

}  // namespace kvstore::net
