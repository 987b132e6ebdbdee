// Arena: bump allocation for memtable entries, freed all at once with the
// memtable. One writer allocates; readers only read memory already handed
// out, so MemoryUsage is the only member read concurrently.
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstdlib>
#include <new>
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
    char* block = nullptr;
    if (bytes >= kHugePageSize && bytes % kHugePageSize == 0) {
      // A memtable's inserts and lookups hop between nodes all over the
      // arena: on 4 KiB pages nearly every hop also misses the TLB. Blocks
      // of whole 2 MiB pages, offered to the kernel for transparent huge
      // pages, take most of those misses away.
      block = static_cast<char*>(std::aligned_alloc(kHugePageSize, bytes));
      if (block != nullptr) (void)::madvise(block, bytes, MADV_HUGEPAGE);
    }
    if (block == nullptr) block = static_cast<char*>(std::malloc(bytes));  // no zeroing
    if (block == nullptr) throw std::bad_alloc();
    blocks_.emplace_back(block);
    usage_.fetch_add(bytes + sizeof(void*), std::memory_order_relaxed);
    return block;
  }

  static constexpr size_t kHugePageSize = 2 << 20;
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };

  const size_t block_size_;
  char* ptr_ = nullptr;
  size_t remaining_ = 0;
  std::vector<std::unique_ptr<char, Free>> blocks_;
  std::atomic<size_t> usage_{0};
};

}  // namespace kvstore
