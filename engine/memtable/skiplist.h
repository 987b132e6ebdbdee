// SkipList: an ordered set of encoded entries over arena memory, with each
// entry stored inline right after its node's level-0 link, so that a hop
// reads the link and the key from one cache line (the keys of a memtable are
// what every insert and lookup compares). The links of higher levels sit
// before the node, as in RocksDB's InlineSkipList.
//
// One writer at a time (the caller serializes inserts); any number of
// readers run concurrently with it and without locks: a node is fully built
// before it is published with a release store, and readers follow links
// with acquire loads. Nodes are never removed, so a reader never sees freed
// memory while the list lives.
#pragma once

#include <atomic>
#include <cassert>
#include <cstdint>

#include "engine/memtable/arena.h"

namespace kvstore {

// Comparator: int operator()(const char* a, const char* b) over entries.
template <class Comparator>
class SkipList {
 private:
  struct Node;

 public:
  SkipList(Comparator cmp, Arena* arena)
      : compare_(cmp), arena_(arena), head_(NewNode(0, kMaxHeight)) {
    for (int i = 0; i < kMaxHeight; i++) head_->SetNext(i, nullptr);
  }
  SkipList(const SkipList&) = delete;
  SkipList& operator=(const SkipList&) = delete;

  // Returns room for an entry of size bytes; fill it, then Insert it. Only
  // the writer calls this, one entry at a time.
  char* AllocateEntry(size_t size) {
    pending_height_ = RandomHeight();
    return const_cast<char*>(NewNode(size, pending_height_)->Key());
  }

  // Inserts the entry just filled in, which must not compare equal to any
  // entry in the list. Returns the entry that now follows it, or nullptr.
  const char* Insert(const char* entry) {
    Node* prev[kMaxHeight];
    Node* next = FindGreaterOrEqual(entry, prev);
    assert(next == nullptr || compare_(entry, next->Key()) != 0);
    (void)next;
    return LinkIn(Node::FromKey(entry), prev);
  }

  // Inserts the entry just filled in, which the caller knows compares after
  // every entry in the list (it keeps the largest one): no search, which
  // makes inserts in key order (bulk loads, sequential keys) cheap.
  void InsertLast(const char* entry) {
    assert(last_[0] == nullptr || compare_(last_[0]->Key(), entry) < 0);
    Node* prev[kMaxHeight];
    for (int i = 0; i < kMaxHeight; i++) prev[i] = last_[i] != nullptr ? last_[i] : head_;
    (void)LinkIn(Node::FromKey(entry), prev);
  }

  class Iterator {
   public:
    explicit Iterator(const SkipList* list) : list_(list), node_(nullptr) {}
    bool Valid() const { return node_ != nullptr; }
    const char* key() const { return node_->Key(); }
    void Next() { node_ = node_->Next(0); }
    void Seek(const char* target) { node_ = list_->FindGreaterOrEqual(target, nullptr); }
    void SeekToFirst() { node_ = list_->head_->Next(0); }

   private:
    const SkipList* list_;
    Node* node_;
  };

 private:
  static constexpr int kMaxHeight = 12;
  static constexpr unsigned kBranching = 4;
  using Link = std::atomic<Node*>;

  // In memory: [link of level h-1] … [link of level 1] | Node (link of
  // level 0) | entry bytes.
  struct Node {
    static Node* FromKey(const char* key) {
      return reinterpret_cast<Node*>(const_cast<char*>(key) - sizeof(Node));
    }
    const char* Key() const { return reinterpret_cast<const char*>(this + 1); }
    Node* Next(int n) { return LinkAt(n)->load(std::memory_order_acquire); }
    void SetNext(int n, Node* x) { LinkAt(n)->store(x, std::memory_order_release); }
    Node* NoBarrierNext(int n) { return LinkAt(n)->load(std::memory_order_relaxed); }
    void NoBarrierSetNext(int n, Node* x) { LinkAt(n)->store(x, std::memory_order_relaxed); }
    Link* LinkAt(int n) { return reinterpret_cast<Link*>(this) - n; }

    Link level0;
  };
  static_assert(sizeof(Node) == sizeof(Link));

  // Links x in after prev[0 .. its height); returns the entry after it.
  const char* LinkIn(Node* x, Node** prev) {
    const int height = pending_height_;
    int max_height = max_height_.load(std::memory_order_relaxed);
    if (height > max_height) {
      for (int i = max_height; i < height; i++) prev[i] = head_;
      // Readers that see the new height before the new links find head_'s
      // null pointers at those levels and drop down: harmless.
      max_height_.store(height, std::memory_order_relaxed);
    }
    for (int i = 0; i < height; i++) {
      Node* next = prev[i]->NoBarrierNext(i);
      x->NoBarrierSetNext(i, next);
      prev[i]->SetNext(i, x);  // release: publishes the node
      if (next == nullptr) last_[i] = x;
    }
    Node* after = x->NoBarrierNext(0);
    return after == nullptr ? nullptr : after->Key();
  }

  Node* NewNode(size_t key_size, int height) {
    const size_t upper = sizeof(Link) * static_cast<size_t>(height - 1);
    char* mem = arena_->AllocateAligned(upper + sizeof(Node) + key_size);
    for (int i = 1; i < height; i++) new (mem + upper - sizeof(Link) * static_cast<size_t>(i)) Link(nullptr);
    return new (mem + upper) Node();
  }

  int RandomHeight() {
    int height = 1;
    while (height < kMaxHeight && (NextRandom() % kBranching) == 0) height++;
    return height;
  }
  uint32_t NextRandom() {
    // xorshift32: only the writer calls it.
    rnd_ ^= rnd_ << 13;
    rnd_ ^= rnd_ >> 17;
    rnd_ ^= rnd_ << 5;
    return rnd_;
  }

  bool KeyIsAfterNode(const char* key, Node* n) const {
    return n != nullptr && compare_(n->Key(), key) < 0;
  }

  Node* FindGreaterOrEqual(const char* key, Node** prev) const {
    Node* x = head_;
    int level = max_height_.load(std::memory_order_relaxed) - 1;
    for (;;) {
      Node* next = x->Next(level);
      // The node after next is the likely next hop: start loading it while
      // next's key is compared (a cache miss per hop dominates inserts).
      if (next != nullptr) __builtin_prefetch(next->NoBarrierNext(level));
      if (KeyIsAfterNode(key, next)) {
        x = next;
      } else {
        if (prev != nullptr) prev[level] = x;
        if (level == 0) return next;
        level--;
      }
    }
  }

  Comparator const compare_;
  Arena* const arena_;
  Node* const head_;
  std::atomic<int> max_height_{1};
  int pending_height_ = 0;
  Node* last_[kMaxHeight] = {};  // the last node of each level (writer only); null: none yet
  uint32_t rnd_ = 0x9e3779b9u;
};

}  // namespace kvstore
