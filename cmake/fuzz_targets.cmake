# The libFuzzer targets that `./kv fuzz TARGET SECONDS` and ctest know, one
# per line: name | executable under the fuzz build directory | seed corpus
# under the source tree | extra libFuzzer flags. Adding a target is one line
# here plus its executable in a KVSTORE_FUZZ build (fuzz/CMakeLists.txt).
# Files in a seed corpus are replayed before every fuzz run, so an input
# that once crashed a target, saved there, is a regression test.
set(KVSTORE_FUZZ_TARGETS
  "wal|fuzz/wal_fuzz|fuzz/corpus/wal|-max_len=40000"
  "sstable|fuzz/sstable_fuzz|fuzz/corpus/sstable|-max_len=8192"
  "manifest|fuzz/manifest_fuzz|fuzz/corpus/manifest|-max_len=4096"
  "index|fuzz/index_fuzz|fuzz/corpus/index|-max_len=65536"
  "protocol|net/handler_fuzz|net/fuzz_corpus|-max_len=4096"
)
