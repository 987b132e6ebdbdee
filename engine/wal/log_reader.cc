#include "engine/wal/log_reader.h"

#include <algorithm>

#include "engine/coding/checksum.h"
#include "engine/coding/coding.h"
#include "engine/wal/log_format.h"

namespace kvstore::wal {

LogReader::LogReader(std::unique_ptr<SequentialFile> file, std::string path)
    : file_(std::move(file)), path_(std::move(path)), block_(new char[kBlockSize]) {}

Status LogReader::ReadHeader() {
  char header[kFileHeaderSize];
  std::string_view got;
  Status s = file_->Read(kFileHeaderSize, &got, header);
  if (!s.ok()) return s;
  if (got.size() < kFileHeaderSize) {
    return Status::Corruption(path_ + ": truncated header (" + std::to_string(got.size()) +
                              " bytes)");
  }
  if (got.substr(0, 8) != kMagic.substr(0, 8) ||
      !ChecksumMatches(DecodeFixed32(got.data() + 12), Checksum32(got.substr(0, 12)))) {
    return Status::Corruption(path_ + ": not a kvstore WAL segment (bad magic or header checksum)");
  }
  uint32_t version = DecodeFixed32(got.data() + 8);
  if (version < kOldestReadableVersion || version > kFormatVersion) {
    return Status::NotSupported(path_ + ": WAL format version " + std::to_string(version) +
                                " is not supported (this build reads versions " +
                                std::to_string(kOldestReadableVersion) + " to " + std::to_string(kFormatVersion) + ")");
  }
  version_ = version;
  max_type_ = MaxRecordType(version);
  buffer_offset_ = kFileHeaderSize;
  last_record_end_ = kFileHeaderSize;
  return Status::OK();
}

LogReader::Physical LogReader::Bad(std::string_view why, uint64_t offset) {
  error_ = std::string(why);
  bad_offset_ = offset;
  return Physical::kBad;
}

LogReader::Physical LogReader::ReadPhysical(uint8_t* type, std::string_view* fragment,
                                            uint64_t* offset) {
  for (;;) {
    if (buffer_.size() < kHeaderSize) {
      if (!eof_) {
        // Skip the block trailer and read the next block.
        if (resyncing_) skipped_nonzero_ |= buffer_.find_first_not_of('\0') != std::string_view::npos;
        buffer_offset_ += buffer_.size();
        Status s = file_->Read(kBlockSize, &buffer_, block_.get());
        if (!s.ok()) {
          error_ = s.ToString();
          return Physical::kIOError;
        }
        if (buffer_.size() < kBlockSize) eof_ = true;
        continue;
      }
      if (!buffer_.empty()) {
        const uint64_t at = buffer_offset_;
        const bool zeros = buffer_.find_first_not_of('\0') == std::string_view::npos;
        buffer_offset_ += buffer_.size();
        buffer_ = {};
        if (!resyncing_) {
          // Zeros written ahead may end this close to a block's end.
          bad_is_zeros_ = zeros;
          skipped_nonzero_ = !zeros;
          return Bad(zeros ? "zeroed bytes where a record should be" : "truncated record header", at);
        }
        skipped_nonzero_ |= !zeros;
      }
      return Physical::kEnd;
    }
    const char* h = buffer_.data();
    const uint32_t length = static_cast<uint8_t>(h[4]) |
                            (static_cast<uint32_t>(static_cast<uint8_t>(h[5])) << 8);
    const uint8_t t = static_cast<uint8_t>(h[6]);
    const uint64_t at = buffer_offset_;
    const char* why = nullptr;
    if (t == kZeroType) {
      why = "zeroed bytes where a record should be";
    } else if (t > max_type_) {
      why = "bad record type";
    } else if (kHeaderSize + length > buffer_.size()) {
      why = eof_ ? "truncated record" : "record length runs past its block";
    } else if (!ChecksumMatches(DecodeFixed32(h), Checksum32(std::string_view(h + kHeaderSize, length),
                                                             RecordChecksumSeed(t, length)))) {
      why = "checksum mismatch";
    }
    if (why != nullptr) {
      // Nothing about a damaged header can be trusted, its length least of
      // all: look for the next intact record one byte further on. Finding
      // one is what tells damage in the middle from a torn tail.
      const bool zero_header = std::string_view(h, kHeaderSize).find_first_not_of('\0') == std::string_view::npos;
      const bool nonzero = h[0] != 0;
      buffer_.remove_prefix(1);
      buffer_offset_ += 1;
      if (resyncing_) {
        skipped_nonzero_ |= nonzero;
        continue;
      }
      resyncing_ = true;
      bad_is_zeros_ = zero_header;
      skipped_nonzero_ = nonzero;
      return Bad(why, at);
    }
    resyncing_ = false;
    buffer_.remove_prefix(kHeaderSize + length);
    buffer_offset_ += kHeaderSize + length;
    *type = t;
    *fragment = std::string_view(h + kHeaderSize, length);
    *offset = at;
    return Physical::kFragment;
  }
}

LogReader::Result LogReader::Read(std::string_view* record, uint64_t* offset) {
  bool in_fragment = false;
  uint64_t record_start = 0;
  scratch_.clear();
  uint8_t type = 0;
  std::string_view fragment;
  uint64_t at = 0;
  // Puts the fragment just read back, for the next call to return.
  auto unread = [&] {
    buffer_ = std::string_view(fragment.data() - kHeaderSize, buffer_.size() + kHeaderSize + fragment.size());
    buffer_offset_ = at;
  };
  auto cut_off = [&] {
    // The record before this fragment lost its end: report that first, and
    // let the next call read this fragment again.
    *offset = record_start;
    error_ = "record cut off before its last fragment";
    unread();
    return Result::kBadRecord;
  };
  for (;;) {
    switch (ReadPhysical(&type, &fragment, &at)) {
      case Physical::kEnd:
        if (in_fragment) {
          *offset = record_start;
          error_ = "record cut off before its last fragment";
          return Result::kBadRecord;
        }
        return Result::kEnd;
      case Physical::kIOError:
        return Result::kIOError;
      case Physical::kBad:
        if (in_fragment) {
          *offset = record_start;
          return Result::kBadRecord;
        }
        if (bad_is_zeros_) return AfterZeros(offset);
        *offset = bad_offset_;
        return Result::kBadRecord;
      case Physical::kFragment:
        break;
    }
    switch (type) {
      case kFullType:
        if (in_fragment) return cut_off();
        *record = fragment;
        *offset = at;
        last_record_end_ = buffer_offset_;
        return Result::kRecord;
      case kFirstType:
        if (in_fragment) return cut_off();
        in_fragment = true;
        record_start = at;
        scratch_.assign(fragment);
        break;
      case kMiddleType:
      case kLastType:
        if (!in_fragment) {
          *offset = at;
          error_ = "fragment without the start of its record";
          return Result::kBadRecord;
        }
        scratch_.append(fragment);
        if (type == kLastType) {
          *record = scratch_;
          *offset = record_start;
          last_record_end_ = buffer_offset_;
          return Result::kRecord;
        }
        break;
      case kSyncMarkType:
        // Written between groups, never inside a record.
        if (in_fragment) return cut_off();
        if (fragment.size() == kSyncMarkSize) {
          synced_through_ = std::max(synced_through_, DecodeFixed64(fragment.data()));
        }
        break;
    }
  }
}

LogReader::Result LogReader::AfterZeros(uint64_t* offset) {
  // Zeros where a record should start. If only zeros follow to the end of
  // the file, they are the space a writer had written ahead: the clean end.
  // Anything else makes them damage, reported at their start.
  const uint64_t zeros_at = bad_offset_;
  const std::string why = error_;
  uint8_t type = 0;
  std::string_view fragment;
  uint64_t at = 0;
  Physical p = ReadPhysical(&type, &fragment, &at);
  if (p == Physical::kIOError) return Result::kIOError;
  if (p == Physical::kEnd && !skipped_nonzero_) {
    zero_tail_ = true;
    return Result::kEnd;
  }
  if (p == Physical::kFragment) {
    // Read it again on the next call.
    buffer_ = std::string_view(fragment.data() - kHeaderSize, buffer_.size() + kHeaderSize + fragment.size());
    buffer_offset_ = at;
  }
  *offset = zeros_at;
  error_ = why;
  return Result::kBadRecord;
}

}  // namespace kvstore::wal
