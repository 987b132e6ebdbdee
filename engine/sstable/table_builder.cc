#include "engine/sstable/table_builder.h"

#include "engine/coding/coding.h"
#include "engine/coding/internal_key.h"

namespace kvstore::sstable {

void TableProperties::EncodeTo(std::string* dst) const {
  for (uint64_t v : {entries, deletions, data_blocks, raw_key_bytes, raw_value_bytes}) PutVarint64(dst, v);
  PutLengthPrefixed(dst, smallest);
  PutLengthPrefixed(dst, largest);
}

bool TableProperties::DecodeFrom(std::string_view input) {
  for (uint64_t* v : {&entries, &deletions, &data_blocks, &raw_key_bytes, &raw_value_bytes}) {
    if (!GetVarint64(&input, v)) return false;
  }
  std::string_view s, l;
  if (!GetLengthPrefixed(&input, &s) || !GetLengthPrefixed(&input, &l)) return false;
  smallest.assign(s);
  largest.assign(l);
  return true;
}

TableBuilder::TableBuilder(const TableOptions& options, WritableFile* file)
    : options_(options), file_(file), data_(options.restart_interval), bloom_(options.bloom_bits_per_key) {}

void TableBuilder::Add(std::string_view key, std::string_view value) {
  if (!status_.ok()) return;
  if (props_.entries == 0) props_.smallest.assign(key);
  data_.Add(key, value);
  if (options_.bloom_bits_per_key > 0) bloom_.Add(ExtractUserKey(key));
  props_.entries++;
  if (TagType(ExtractTag(key)) == ValueType::kDeletion) props_.deletions++;
  props_.raw_key_bytes += key.size();
  props_.raw_value_bytes += value.size();
  if (data_.EstimatedSize() >= options_.block_size) FlushDataBlock();
}

BlockHandle TableBuilder::WriteBlock(std::string_view raw, Compression compression) {
  scratch_.clear();
  BlockHandle handle = AppendBlock(raw, compression, offset_, &scratch_);
  if (status_.ok()) status_ = file_->Append(scratch_);
  offset_ += scratch_.size();
  return handle;
}

void TableBuilder::FlushDataBlock() {
  if (data_.empty()) return;
  // The index maps the block's last key to its handle: a Seek lands on the
  // first block whose last key is >= the target.
  std::string last(data_.last_key());
  BlockHandle handle = WriteBlock(data_.Finish(), options_.compression);
  data_.Reset();
  props_.data_blocks++;
  std::string encoded;
  handle.EncodeTo(&encoded);
  index_.Add(last, encoded);
  props_.largest = std::move(last);
}

Status TableBuilder::Finish() {
  FlushDataBlock();
  Footer footer;
  if (options_.bloom_bits_per_key > 0) {
    std::string filter = bloom_.Finish();
    footer.filter = WriteBlock(filter, Compression::kNone);
  }
  footer.index = WriteBlock(index_.Finish(), options_.compression);
  std::string props;
  props_.EncodeTo(&props);
  footer.properties = WriteBlock(props, Compression::kNone);
  std::string tail;
  footer.EncodeTo(&tail);
  if (status_.ok()) status_ = file_->Append(tail);
  offset_ += tail.size();
  return status_;
}

}  // namespace kvstore::sstable
