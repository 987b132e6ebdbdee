// Which engines this kvbench was built with.
#include <string>
#include <vector>

#include "bench/bench_engine.h"

namespace kvbench {

std::vector<std::string> AvailableEngines() {
  std::vector<std::string> names = {"kvstore"};
#ifdef KVBENCH_HAVE_ROCKSDB
  names.push_back("rocksdb");
#endif
#ifdef KVBENCH_HAVE_LEVELDB
  names.push_back("leveldb");
#endif
  names.push_back("raw");
  return names;
}

std::unique_ptr<BenchEngine> MakeEngine(const std::string& name, std::string* error) {
  if (name == "kvstore") return NewKvstoreEngine();
  if (name == "raw") return NewRawEngine();
  if (name == "rocksdb") {
#ifdef KVBENCH_HAVE_ROCKSDB
    return NewRocksdbEngine();
#else
    *error = "engine 'rocksdb' was not compiled in (CMake did not find RocksDB; install librocksdb-dev and reconfigure)";
    return nullptr;
#endif
  }
  if (name == "leveldb") {
#ifdef KVBENCH_HAVE_LEVELDB
    return NewLeveldbEngine();
#else
    *error = "engine 'leveldb' was not compiled in (CMake did not find LevelDB; install libleveldb-dev and reconfigure)";
    return nullptr;
#endif
  }
  std::string known;
  for (const std::string& n : AvailableEngines()) known += (known.empty() ? "" : ", ") + n;
  *error = "unknown engine '" + name + "' (this build has: " + known + ")";
  return nullptr;
}

}  // namespace kvbench
