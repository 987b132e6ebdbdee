#include "engine/sstable/table.h"

#include "engine/sstable/block.h"
#include "engine/sstable/bloom.h"

namespace kvstore::sstable {

Status Table::Open(std::unique_ptr<RandomAccessFile> file, uint64_t file_size, std::string file_name,
                   BlockCache* cache, std::unique_ptr<Table>* table) {
  if (file_size < kFooterSize) {
    return Status::Corruption(file_name + ": " + std::to_string(file_size) +
                              " bytes is too short to be a table");
  }
  char footer_buf[kFooterSize];
  std::string_view footer_input;
  Status s = file->Read(file_size - kFooterSize, kFooterSize, &footer_input, footer_buf);
  if (!s.ok()) return s;
  Footer footer;
  s = footer.DecodeFrom(footer_input, file_name);
  if (!s.ok()) return s;
  for (const BlockHandle* h : {&footer.index, &footer.filter, &footer.properties}) {
    if (h->offset > file_size || h->size > file_size - h->offset) {
      return Status::Corruption(file_name + ": footer points past the end of the file");
    }
  }
  std::unique_ptr<Table> t(new Table());
  t->file_ = std::move(file);
  t->file_name_ = std::move(file_name);
  t->cache_ = cache;
  t->cache_id_ = cache != nullptr ? cache->NewId() : 0;
  s = ReadBlock(*t->file_, t->file_name_, footer.index, &t->index_);
  if (!s.ok()) return s;
  if (footer.filter.size > 0) {
    s = ReadBlock(*t->file_, t->file_name_, footer.filter, &t->filter_);
    if (!s.ok()) return s;
  }
  std::shared_ptr<const BlockContents> props;
  s = ReadBlock(*t->file_, t->file_name_, footer.properties, &props);
  if (!s.ok()) return s;
  if (!t->props_.DecodeFrom(props->data)) return Status::Corruption(t->file_name_ + ": bad properties block");
  *table = std::move(t);
  return Status::OK();
}

size_t Table::MemoryUsage() const {
  return index_->data.size() + (filter_ != nullptr ? filter_->data.size() : 0) + sizeof(*this);
}

bool Table::MayContain(std::string_view user_key) const {
  return filter_ == nullptr || BloomMayContain(filter_->data, user_key);
}

Status Table::ReadDataBlock(std::string_view handle_value, std::shared_ptr<const BlockContents>* block) const {
  BlockHandle handle;
  if (!handle.DecodeFrom(&handle_value)) return Status::Corruption(file_name_ + ": bad block handle in index");
  if (cache_ != nullptr) {
    *block = cache_->Lookup(cache_id_, handle.offset);
    if (*block != nullptr) return Status::OK();
  }
  Status s = ReadBlock(*file_, file_name_, handle, block);
  if (s.ok() && cache_ != nullptr) cache_->Insert(cache_id_, handle.offset, *block);
  return s;
}

Status Table::Get(std::string_view lookup_key, Lookup* result, std::string* value, uint64_t* found_seq) const {
  *result = Lookup::kAbsent;
  const std::string_view user_key = ExtractUserKey(lookup_key);
  if (!MayContain(user_key)) return Status::OK();
  BlockIterator index(index_.get(), CompareInternalKeys);  // index_ lives as long as the table
  index.Seek(lookup_key);
  if (!index.Valid()) {
    return index.status().ok() ? Status::OK()
                               : Status::Corruption(file_name_ + ": " + std::string(index.status().message()));
  }
  std::shared_ptr<const BlockContents> block;
  Status s = ReadDataBlock(index.value(), &block);
  if (!s.ok()) return s;
  BlockIterator it(std::move(block), CompareInternalKeys);
  it.Seek(lookup_key);
  if (!it.Valid()) {
    return it.status().ok() ? Status::OK()
                            : Status::Corruption(file_name_ + ": " + std::string(it.status().message()));
  }
  if (ExtractUserKey(it.key()) != user_key) return Status::OK();
  if (found_seq != nullptr) *found_seq = TagSequence(ExtractTag(it.key()));
  if (TagType(ExtractTag(it.key())) == ValueType::kDeletion) {
    *result = Lookup::kDeleted;
  } else {
    *result = Lookup::kFound;
    value->assign(it.value());
  }
  return Status::OK();
}

// Two levels: the index iterator picks a data block, the block iterator
// walks it; running off a block's end moves to the next block.
class Table::Iter final : public InternalIterator {
 public:
  explicit Iter(const Table* table) : table_(table), index_(table->index_, CompareInternalKeys) {}

  bool Valid() const override { return data_ != nullptr && data_->Valid(); }
  void SeekToFirst() override {
    index_.SeekToFirst();
    InitDataBlock();
    if (data_ != nullptr) data_->SeekToFirst();
    SkipEmptyBlocks();
  }
  void Seek(std::string_view target) override {
    index_.Seek(target);
    InitDataBlock();
    if (data_ != nullptr) data_->Seek(target);
    SkipEmptyBlocks();
  }
  void Next() override {
    data_->Next();
    SkipEmptyBlocks();
  }
  std::string_view key() const override { return data_->key(); }
  std::string_view value() const override { return data_->value(); }
  Status status() const override {
    if (!status_.ok()) return status_;
    if (!index_.status().ok()) return Status::Corruption(table_->file_name_ + ": index: " +
                                                         std::string(index_.status().message()));
    if (data_ != nullptr && !data_->status().ok()) {
      return Status::Corruption(table_->file_name_ + ": " + std::string(data_->status().message()));
    }
    return Status::OK();
  }

 private:
  void InitDataBlock() {
    data_.reset();
    if (!index_.Valid() || !status_.ok()) return;
    std::shared_ptr<const BlockContents> block;
    status_ = table_->ReadDataBlock(index_.value(), &block);
    if (status_.ok()) data_ = std::make_unique<BlockIterator>(std::move(block), CompareInternalKeys);
  }
  void SkipEmptyBlocks() {
    while (data_ != nullptr && !data_->Valid() && data_->status().ok()) {
      index_.Next();
      InitDataBlock();
      if (data_ != nullptr) data_->SeekToFirst();
    }
  }

  const Table* table_;
  BlockIterator index_;
  std::unique_ptr<BlockIterator> data_;
  Status status_;
};

Status Table::ForEachReadableEntry(const std::function<void(std::string_view, std::string_view)>& fn,
                                   uint64_t* bad_blocks) const {
  *bad_blocks = 0;
  BlockIterator index(index_, CompareInternalKeys);
  for (index.SeekToFirst(); index.Valid(); index.Next()) {
    std::shared_ptr<const BlockContents> block;
    if (!ReadDataBlock(index.value(), &block).ok()) {
      ++*bad_blocks;
      continue;
    }
    BlockIterator it(std::move(block), CompareInternalKeys);
    for (it.SeekToFirst(); it.Valid(); it.Next()) fn(it.key(), it.value());
    // The checksum passed but the entries did not decode: what came before
    // the bad entry was delivered, the rest of the block is lost.
    if (!it.status().ok()) ++*bad_blocks;
  }
  if (!index.status().ok()) {
    return Status::Corruption(file_name_ + ": index: " + std::string(index.status().message()));
  }
  return Status::OK();
}

std::unique_ptr<InternalIterator> Table::NewIterator() const { return std::make_unique<Iter>(this); }

}  // namespace kvstore::sstable
