// Arena: bump allocation for memtable entries, freed all at once with the
// memtable. One writer allocates; readers only read memory already handed
// out, so MemoryUsage is the only member read concurrently.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <vector>

namespace kvstore {

class Arena {
 public:
  explicit Arena(size_t block_size = kDefaultBlockSize) : block_size_(block_size) {}
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  char* Allocate(size_t bytes) {
    if (bytes <= remaining_) {
      char* result = ptr_;
      ptr_ += bytes;
      remaining_ -= bytes;
      return result;
    }
    return AllocateFallback(bytes);
  }
  // Aligned for pointers (skiplist nodes hold atomics).
  char* AllocateAligned(size_t bytes) {
    constexpr size_t kAlign = alignof(std::max_align_t) > 8 ? alignof(std::max_align_t) : 8;
    size_t mod = reinterpret_cast<uintptr_t>(ptr_) & (kAlign - 1);
    size_t slop = mod == 0 ? 0 : kAlign - mod;
    if (bytes + slop <= remaining_) {
      char* result = ptr_ + slop;
      ptr_ += bytes + slop;
      remaining_ -= bytes + slop;
      return result;
    }
    return AllocateFallback(bytes);  // new blocks come from operator new, already aligned
  }

  size_t MemoryUsage() const { return usage_.load(std::memory_order_relaxed); }

 public:
  static constexpr size_t kDefaultBlockSize = 64 * 1024;

  char* AllocateFallback(size_t bytes) {
    if (bytes > block_size_ / 4) return NewBlock(bytes);  // big entries get their own block
    ptr_ = NewBlock(block_size_);
    remaining_ = block_size_;
    char* result = ptr_;
    ptr_ += bytes;
    remaining_ -= bytes;
    return result;
  }
  char* NewBlock(size_t bytes) {
    blocks_.push_back(std::unique_ptr<char[]>(new char[bytes]));  // no zeroing
    usage_.fetch_add(bytes + sizeof(void*), std::memory_order_relaxed);
    return blocks_.back().get();
  }

  const size_t block_size_;
  char* ptr_ = nullptr;
  size_t remaining_ = 0;
  std::vector<std::unique_ptr<char[]>> blocks_;
  std::atomic<size_t> usage_{0};
};

}  // namespace kvstore
