// Arena: bump allocation for memtable entries, freed all at once with the
// memtable. One writer allocates; readers only read memory already handed
// out, so MemoryUsage is the only member read concurrently.
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace kvstore {

// Blocks of one huge page, recycled from the arenas of retired memtables to
// new ones. A fresh block costs a page fault and the kernel zeroing 2 MiB on
// first touch (in this VM, where the host backs the page at the same time,
// up to hundreds of milliseconds for one); those faults were 13% of
// kvserver's CPU under pipelined sets. Process-wide, at most kMaxBlocks
// (64 MiB, one default memtable) wait here; more are freed.
class HugeBlockPool {
 public:
  static constexpr size_t kMaxBlocks = 32;
  // A recycled block, or nullptr.
  static char* Take() {
    HugeBlockPool& p = Instance();
    std::lock_guard lock(p.mu_);
    if (p.blocks_.empty()) return nullptr;
    char* block = p.blocks_.back();
    p.blocks_.pop_back();
    return block;
  }
  // Keeps block for a later arena, or frees it when the pool is full.
  static void Give(char* block) {
    HugeBlockPool& p = Instance();
    {
      std::lock_guard lock(p.mu_);
      if (p.blocks_.size() < kMaxBlocks) {
        p.blocks_.push_back(block);
        return;
      }
    }
    std::free(block);
  }
  static size_t pooled() {
    HugeBlockPool& p = Instance();
    std::lock_guard lock(p.mu_);
    return p.blocks_.size();
  }

 private:
  static HugeBlockPool& Instance() {
    // Never destroyed: arenas of static objects may give blocks back late.
    static HugeBlockPool* pool = new HugeBlockPool;
    return *pool;
  }
  std::mutex mu_;
  std::vector<char*> blocks_;
};

class Arena {
 public:
  explicit Arena(size_t block_size = kDefaultBlockSize) : block_size_(block_size) {}
  ~Arena() {
    for (char* block : huge_blocks_) HugeBlockPool::Give(block);
  }
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
    // A memtable's inserts and lookups hop between nodes all over the
    // arena: on 4 KiB pages nearly every hop also misses the TLB. Blocks of
    // whole 2 MiB pages, offered to the kernel for transparent huge pages,
    // take most of those misses away.
    const bool huge = bytes >= kHugePageSize && bytes % kHugePageSize == 0;
    const bool pooled = bytes == kHugePageSize;
    char* block = pooled ? HugeBlockPool::Take() : nullptr;
    if (block == nullptr && huge) {
      block = static_cast<char*>(std::aligned_alloc(kHugePageSize, bytes));
      if (block != nullptr) (void)::madvise(block, bytes, MADV_HUGEPAGE);
    }
    if (block == nullptr) block = static_cast<char*>(std::malloc(bytes));  // no zeroing
    if (block == nullptr) throw std::bad_alloc();
    // Blocks from malloc (not huge-page aligned) must not enter the pool.
    if (pooled && reinterpret_cast<uintptr_t>(block) % kHugePageSize == 0) {
      huge_blocks_.push_back(block);
    } else {
      blocks_.emplace_back(block);
    }
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
  std::vector<char*> huge_blocks_;  // one huge page each; back to the pool when the arena goes
  std::atomic<size_t> usage_{0};
};

}  // namespace kvstore
