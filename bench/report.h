// The outputs of `kvbench suite`: one Record per measured workload, written
// as JSON lines, a Markdown summary (with kvstore/peer ratios when a peer ran
// the same workload) and SVG charts drawn by hand (no plotting library).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvbench {

struct Record {
  std::string system;    // kvstore, redis, rocksdb, leveldb, raw
  std::string group;     // dataset, bulk, mixed, clients, pipeline, large, search, durability, engine, engine_sync
  std::string workload;  // set, get, bulk_set, ycsb_a, ...
  uint64_t dataset = 0;  // keys in the store while measured
  int clients = 1;
  int pipeline = 1;
  uint64_t value_size = 0;
  uint64_t ops = 0;  // items for bulk writes
  uint64_t errors = 0;
  uint64_t misses = 0;  // gets of absent keys (not errors, but not a read of a value either)
  double seconds = 0;
  double ops_per_sec = 0;
  double mb_per_sec = 0;
  double p50_us = 0, p90_us = 0, p99_us = 0, p999_us = 0, max_us = 0;
  // CPU the server process used per op while measured (user + system, all
  // its threads, background work included); 0 when unknown (not a process
  // the harness started). Unlike ops/s it barely moves when other work
  // shares the cores.
  double server_cpu_us = 0;
  // durability only
  uint64_t acknowledged = 0, lost = 0;

  std::string ToJson() const;
  // What identifies "the same workload" across systems.
  std::string Key() const;
};

// Markdown: a table per group, kvstore beside the peer with the ratio.
std::string MarkdownSummary(const std::vector<Record>& records, const std::string& header);
// Throughput of set and get against the number of clients (log2 x axis).
std::string ThroughputSvg(const std::vector<Record>& records);
// p50/p90/p99/p99.9 per op at 50 clients (log y axis), a bar each.
std::string LatencySvg(const std::vector<Record>& records);
// MB/s against value size for the large-value sets and gets.
std::string LargeValuesSvg(const std::vector<Record>& records);

}  // namespace kvbench
