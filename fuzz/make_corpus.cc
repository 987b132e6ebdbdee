// Writes the seed corpora in fuzz/corpus/ from real files: a store is
// opened, written, flushed and compacted through the public API, and its
// WAL segment, tables and manifest are copied out; a few small tables and
// segments written directly add the shapes a tiny store never makes (many
// blocks, fragments, deletions, no filter). Rerun after a format change:
//   build/fuzz/fuzz/make_corpus fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "engine/coding/internal_key.h"
#include "engine/sstable/table_builder.h"
#include "engine/version/version_edit.h"
#include "engine/wal/log_writer.h"
#include "engine/write_batch_internal.h"
#include "index/segment.h"
#include "kvstore/db.h"
#include "kvstore/embedder.h"

namespace fs = std::filesystem;
using namespace kvstore;

namespace {

void Check(const Status& s, const char* what) {
  if (!s.ok()) {
    std::cerr << what << ": " << s.ToString() << "\n";
    std::exit(1);
  }
}

void Save(const fs::path& out, const std::string& bytes) {
  std::ofstream f(out, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string Slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

class StringSink final : public WritableFile {
 public:
  Status Append(std::string_view data) override {
    contents.append(data);
    return Status::OK();
  }
  Status Sync() override { return Status::OK(); }
  Status Truncate(uint64_t size) override {
    contents.resize(size);
    return Status::OK();
  }
  Status Close() override { return Status::OK(); }
  std::string contents;
};

std::string SmallTable(int keys, size_t block_size, int bloom_bits, sstable::Compression compression) {
  StringSink sink;
  sstable::TableOptions options;
  options.block_size = block_size;
  options.restart_interval = 4;
  options.bloom_bits_per_key = bloom_bits;
  options.compression = compression;
  sstable::TableBuilder builder(options, &sink);
  for (int i = 0; i < keys; i++) {
    char user_key[16];
    std::snprintf(user_key, sizeof(user_key), "k%04d", i);
    std::string k;
    AppendInternalKey(&k, user_key, static_cast<SequenceNumber>(100 + i),
                      i % 7 == 3 ? ValueType::kDeletion : ValueType::kValue);
    builder.Add(k, i % 7 == 3 ? "" : std::string(static_cast<size_t>(i % 40), 'a' + i % 26));
  }
  Check(builder.Finish(), "table");
  return sink.contents;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_corpus OUT_DIR (fuzz/corpus)\n";
    return 2;
  }
  const fs::path out = argv[1];
  for (const char* t : {"wal", "sstable", "manifest", "index"}) fs::create_directories(out / t);
  const fs::path dir = fs::temp_directory_path() / ("kvstore_make_corpus_" + std::to_string(::getpid()));
  fs::remove_all(dir);

  // A real store: WAL segment before the flush, tables and manifest after a
  // flush and a compaction.
  {
    std::unique_ptr<DB> db;
    Check(DB::Open(Options{}, dir.string(), &db), "open");
    WriteOptions wo;
    for (int i = 0; i < 40; i++) Check(db->Put(wo, "user:" + std::to_string(i), "{\"n\":" + std::to_string(i) + "}"), "put");
    WriteBatch batch;
    batch.Put("a", "1");
    batch.Delete("user:3");
    batch.Put("b", std::string(300, 'b'));
    Check(db->Write(wo, &batch), "write");
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() == ".log") fs::copy_file(e.path(), out / "wal" / "db_segment", fs::copy_options::overwrite_existing);
    }
    Check(db->Flush(), "flush");
    for (int i = 0; i < 40; i += 2) Check(db->Delete(wo, "user:" + std::to_string(i)), "delete");
    Check(db->Flush(), "flush");
    Check(db->CompactRange("", "\xff"), "compact");
    int tables = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (e.path().extension() == ".sst") fs::copy_file(e.path(), out / "sstable" / ("db_table_" + std::to_string(tables++)), fs::copy_options::overwrite_existing);
      if (name.rfind("MANIFEST-", 0) == 0) fs::copy_file(e.path(), out / "manifest" / "db_manifest", fs::copy_options::overwrite_existing);
    }
  }
  fs::remove_all(dir);

  // Index segments: a small one from a real store with search on, and one
  // with a few hundred 8-dimensional vectors. (None with an HNSW graph:
  // building one trips hnswlib's own over-read under ASan, a prefetch one
  // past a link list in addPoint, and graphs start at 2^27/dimension
  // vectors anyway.)
  {
    Options options;
    options.search.enabled = true;
    options.search.embedder = NewHashingEmbedder(8);
    std::unique_ptr<DB> db;
    Check(DB::Open(options, dir.string(), &db), "open");
    WriteOptions wo;
    const char* texts[] = {"\"the quick brown fox\"", "{\"title\":\"café au lait\",\"tags\":[\"drink\"]}",
                           "東京 tower", "running runners ran", "42"};
    for (int i = 0; i < 20; i++) Check(db->Put(wo, "doc:" + std::to_string(i), texts[i % 5]), "put");
    Check(db->Flush(), "flush");
    int segments = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() == ".idx") {
        fs::copy_file(e.path(), out / "index" / ("db_segment_" + std::to_string(segments++)), fs::copy_options::overwrite_existing);
      }
    }
    db.reset();
    fs::remove_all(dir);

    index::IndexConfig config;
    config.embedder_name = "kvstore-hashing-8";
    config.dimension = 8;
    std::unique_ptr<index::Analyzer> analyzer;
    Check(index::Analyzer::Create(config.analyzer, &analyzer), "analyzer");
    std::shared_ptr<Embedder> embedder = NewHashingEmbedder(8);
    config.embedder_name = embedder->name();
    index::SegmentWriter writer(config);
    for (size_t i = 0; i < 300; i++) {
      index::AnalyzedDoc doc;
      char key[16];
      std::snprintf(key, sizeof(key), "k%05zu", i);
      Check(index::AnalyzeDoc(*analyzer, embedder.get(), key, i + 1, "w" + std::to_string(i % 37) + " x" + std::to_string(i % 11), &doc), "analyze");
      writer.Add(std::move(doc));
    }
    std::string contents;
    Check(writer.Finish(&contents), "segment");
    Save(out / "index" / "vectors_300", contents);
  }

  // Tables with many small blocks, with and without compression or filter.
  Save(out / "sstable" / "blocks_lz4", SmallTable(120, 256, 10, sstable::Compression::kLZ4));
  Save(out / "sstable" / "blocks_raw_nofilter", SmallTable(60, 128, 0, sstable::Compression::kNone));
  Save(out / "sstable" / "one_entry", SmallTable(1, 4096, 10, sstable::Compression::kLZ4));

  // A segment with a record fragmented across a block boundary (32 KiB).
  {
    fs::create_directories(dir);
    const std::string path = (dir / "000001.log").string();
    std::unique_ptr<wal::LogWriter> w;
    Check(wal::LogWriter::Create(Env::Default(), path, &w), "log");
    WriteBatch small;
    small.Put("k", "v");
    small.Delete("gone");
    WriteBatchInternal::SetSequence(&small, 7);
    Check(w->AddRecord(WriteBatchInternal::Contents(small)), "record");
    WriteBatch big;
    big.Put("big", std::string(33 * 1024, 'x'));
    WriteBatchInternal::SetSequence(&big, 9);
    Check(w->AddRecord(WriteBatchInternal::Contents(big)), "record");
    Check(w->Close(), "close");
    Save(out / "wal" / "fragmented", Slurp(path));
    fs::remove_all(dir);
  }

  // Bare version edits: manifest_fuzz also decodes its input as one edit.
  {
    VersionEdit e;
    e.log_number = 5;
    e.next_file_number = 9;
    e.last_sequence = 1234;
    e.DeleteFile(0, 3);
    FileMeta f;
    f.number = 7;
    f.file_size = 4096;
    f.entries = 10;
    AppendInternalKey(&f.smallest, "a", 1, ValueType::kValue);
    AppendInternalKey(&f.largest, "z", 2, ValueType::kDeletion);
    e.AddFile(1, f);
    std::string bytes;
    e.EncodeTo(&bytes);
    Save(out / "manifest" / "edit", bytes);
  }
  std::cout << "seed corpora written to " << out << "\n";
  return 0;
}
