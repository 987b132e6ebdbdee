// The checkpoint transfer (transfer.h) over a real socket on 127.0.0.1.
#include "cluster/transfer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace kvstore::cluster {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteAll(const fs::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
}

class TransferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("kvstore_transfer_test_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "serve" / kId);
    std::mt19937_64 rng(7);
    std::string big(3 << 20, '\0');
    for (char& c : big) c = static_cast<char>(rng());
    WriteAll(root_ / "serve" / kId / "000007.sst", big);
    WriteAll(root_ / "serve" / kId / "MANIFEST-000003", "manifest bytes");
    WriteAll(root_ / "serve" / kId / "000009.log", "");
    server_ = std::make_unique<CheckpointServer>((root_ / "serve").string());
    ASSERT_TRUE(server_->Start("127.0.0.1", 0).ok());
    address_ = "127.0.0.1:" + std::to_string(server_->port());
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(root_);
  }
  fs::path Source() const { return root_ / "serve" / kId; }
  std::string Fetched(int n) const { return (root_ / ("fetched" + std::to_string(n))).string(); }

  static constexpr const char* kId = "00000000000000000042";
  fs::path root_;
  std::unique_ptr<CheckpointServer> server_;
  std::string address_;
};

TEST_F(TransferTest, FetchesEveryFileAndKeepsTheChecksums) {
  ASSERT_TRUE(WriteChecksums(Source().string()).ok());
  ASSERT_TRUE(FetchCheckpoint(address_, kId, Fetched(1), 5000).ok());
  for (const char* f : {"000007.sst", "MANIFEST-000003", "000009.log"}) {
    EXPECT_EQ(ReadAll(Source() / f), ReadAll(fs::path(Fetched(1)) / f)) << f;
  }
  // The fetcher can serve the checkpoint in turn without hashing it.
  EXPECT_EQ(ReadAll(Source() / kChecksumsFile), ReadAll(fs::path(Fetched(1)) / kChecksumsFile));
  EXPECT_EQ(std::distance(fs::directory_iterator(Fetched(1)), fs::directory_iterator()), 4);
}

// LIST answers from the list made with the checkpoint, without reading the
// files (a checkpoint of a few GB took longer to hash than a fetcher waits):
// a file changed after the list was made is then caught by the fetcher.
TEST_F(TransferTest, ListComesFromTheChecksumsMadeWithTheCheckpoint) {
  ASSERT_TRUE(WriteChecksums(Source().string()).ok());
  std::string table = ReadAll(Source() / "000007.sst");
  table[12345] ^= 1;
  WriteAll(Source() / "000007.sst", table);
  Status s = FetchCheckpoint(address_, kId, Fetched(1), 5000);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST_F(TransferTest, WithoutAChecksumsFileTheServerHashesAsItLists) {
  ASSERT_TRUE(FetchCheckpoint(address_, kId, Fetched(1), 5000).ok());
  EXPECT_EQ(ReadAll(Source() / "000007.sst"), ReadAll(fs::path(Fetched(1)) / "000007.sst"));
  EXPECT_TRUE(fs::exists(fs::path(Fetched(1)) / kChecksumsFile));
}

// A checkpoint a peer is fetching is not retired (deleted) under it; once
// the fetch is over it is, and later fetches are refused.
TEST_F(TransferTest, RetireWaitsForAFetchInProgress) {
  ASSERT_TRUE(WriteChecksums(Source().string()).ok());
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(server_->port());
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const std::string list = std::string("LIST ") + kId + "\n";
  ASSERT_EQ(::send(fd, list.data(), list.size(), 0), static_cast<ssize_t>(list.size()));
  std::string reply;
  char buf[4096];
  while (reply.find("END\n") == std::string::npos) {
    ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    ASSERT_GT(r, 0);
    reply.append(buf, static_cast<size_t>(r));
  }
  EXPECT_FALSE(server_->Retire(kId)) << "retired while a peer was fetching it";
  ::close(fd);
  bool retired = false;
  for (auto end = std::chrono::steady_clock::now() + 5s; !retired && std::chrono::steady_clock::now() < end;) {
    retired = server_->Retire(kId);
    if (!retired) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(retired);
  Status s = FetchCheckpoint(address_, kId, Fetched(2), 5000);
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
}

// NEWEST: a follower whose snapshot's holder is gone asks a peer for any
// checkpoint at least as new, then fetches it by the id it is told.
TEST_F(TransferTest, NewestNamesACheckpointAtLeastAsNew) {
  CheckpointServer server((root_ / "serve").string());
  std::vector<std::string> asked;
  server.SetNewestProvider([&](const std::string& min_id) {
    asked.push_back(min_id);
    return min_id <= kId ? std::string(kId) : std::string();
  });
  ASSERT_TRUE(server.Start("127.0.0.1", 0).ok());
  const std::string address = "127.0.0.1:" + std::to_string(server.port());
  std::string id;
  ASSERT_TRUE(FindNewestCheckpoint(address, "00000000000000000040", &id, 5000).ok());
  EXPECT_EQ(id, kId);
  ASSERT_TRUE(FetchCheckpoint(address, id, Fetched(1), 5000).ok());
  EXPECT_EQ(ReadAll(Source() / "000007.sst"), ReadAll(fs::path(Fetched(1)) / "000007.sst"));
  Status s = FindNewestCheckpoint(address, "00000000000000000043", &id, 5000);
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_EQ(asked, (std::vector<std::string>{"00000000000000000040", "00000000000000000043"}));
  // The server without a provider has none to offer.
  s = FindNewestCheckpoint(address_, "00000000000000000040", &id, 5000);
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
}

}  // namespace
}  // namespace kvstore::cluster
