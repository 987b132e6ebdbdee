// The README's embedded-API example, compiled and run by the tests (in the
// tree, and against an installed package through find_package(kvstore)).
#include <cstdio>
#include <memory>
#include <string>

#include "kvstore/db.h"

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "/tmp/kvstore-example";

  kvstore::Options options;  // create_if_missing, 64 MiB memtable
  std::unique_ptr<kvstore::DB> db;
  kvstore::Status s = kvstore::DB::Open(options, path, &db);
  if (!s.ok()) {
    std::fprintf(stderr, "open: %s\n", s.ToString().c_str());
    return 1;
  }

  // Every write is durable (fdatasync'd) before it returns.
  kvstore::WriteOptions durable;
  s = db->Put(durable, "user:1", "Alice");
  if (s.ok()) s = db->Put(durable, "user:2", "Bob");

  // A batch applies all of its entries or none.
  kvstore::WriteBatch batch;
  batch.Put("user:3", "Charlie");
  batch.Delete("user:2");
  if (s.ok()) s = db->Write(durable, &batch);
  if (!s.ok()) {
    std::fprintf(stderr, "write: %s\n", s.ToString().c_str());
    return 1;
  }

  std::string value;
  s = db->Get(kvstore::ReadOptions{}, "user:1", &value);
  std::printf("user:1 = %s\n", s.ok() ? value.c_str() : s.ToString().c_str());
  s = db->Get(kvstore::ReadOptions{}, "user:2", &value);
  std::printf("user:2 %s\n", s.IsNotFound() ? "is gone" : "is still there?");

  // A prefix scan: Seek to the prefix, stop when keys leave it.
  auto it = db->NewIterator(kvstore::ReadOptions{});
  for (it->Seek("user:"); it->Valid() && it->key().starts_with("user:"); it->Next()) {
    std::printf("  %.*s -> %.*s\n", static_cast<int>(it->key().size()), it->key().data(),
                static_cast<int>(it->value().size()), it->value().data());
  }

  std::printf("live keys: %llu\n",
              static_cast<unsigned long long>(db->GetStats().live_keys_estimate));
  return 0;
}
