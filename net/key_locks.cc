#include "net/key_locks.h"

#include <algorithm>

namespace kvstore::net {

KeyLocks::KeyLocks(size_t stripes) : stripes_(stripes == 0 ? 1 : stripes) {}

bool KeyLocks::AdvanceLocked(Request* r) {
  while (r->next < r->held.stripes.size()) {
    Stripe& s = stripes_[r->held.stripes[r->next]];
    if (!s.queue.empty() || !CompatibleLocked(s, r->held.mode)) {
      s.queue.push_back(r);
      ++waiting_;
      return false;
    }
    TakeLocked(s, r->held.mode);
    ++r->next;
  }
  return true;
}

void KeyLocks::Acquire(const std::vector<std::string_view>& keys, Mode mode, Granted granted) {
  auto* r = new Request;
  r->held.mode = mode;
  r->held.stripes.reserve(keys.size());
  for (std::string_view k : keys) {
    r->held.stripes.push_back(static_cast<uint32_t>(std::hash<std::string_view>{}(k) % stripes_.size()));
  }
  std::sort(r->held.stripes.begin(), r->held.stripes.end());
  r->held.stripes.erase(std::unique(r->held.stripes.begin(), r->held.stripes.end()),
                        r->held.stripes.end());
  r->granted = std::move(granted);
  bool done;
  {
    std::lock_guard lock(mu_);
    done = AdvanceLocked(r);
  }
  if (done) {
    Granted g = std::move(r->granted);
    Held h = std::move(r->held);
    delete r;
    g(std::move(h), true);
  }
}

bool KeyLocks::TryAcquireOne(std::string_view key, Mode mode, Held* held) {
  const auto idx = static_cast<uint32_t>(std::hash<std::string_view>{}(key) % stripes_.size());
  {
    std::lock_guard lock(mu_);
    Stripe& s = stripes_[idx];
    if (!s.queue.empty() || !CompatibleLocked(s, mode)) return false;
    TakeLocked(s, mode);
  }
  held->mode = mode;
  held->stripes.assign(1, idx);
  return true;
}

void KeyLocks::Release(const Held& held) {
  std::vector<Request*> ready;
  {
    std::lock_guard lock(mu_);
    for (uint32_t idx : held.stripes) {
      Stripe& s = stripes_[idx];
      if (held.mode == Mode::kShared) {
        --s.shared;
      } else {
        s.exclusive = false;
      }
      // Wake waiters in order while they fit: several shared ones at once,
      // or one exclusive one.
      while (!s.queue.empty() && CompatibleLocked(s, s.queue.front()->held.mode)) {
        Request* r = s.queue.front();
        s.queue.pop_front();
        --waiting_;
        TakeLocked(s, r->held.mode);
        ++r->next;
        if (AdvanceLocked(r)) ready.push_back(r);
      }
    }
  }
  for (Request* r : ready) {
    Granted g = std::move(r->granted);
    Held h = std::move(r->held);
    delete r;
    g(std::move(h), false);
  }
}

size_t KeyLocks::waiting() const {
  std::lock_guard lock(mu_);
  return waiting_;
}

}  // namespace kvstore::net
