#include "engine/env/fault_injection_env.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace kvstore {
namespace {

class FaultInjectionEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() /
            ("kvstore_fi_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  uint64_t Size(const std::string& p) {
    uint64_t n = 0;
    EXPECT_TRUE(Env::Default()->GetFileSize(p, &n).ok());
    return n;
  }
  std::string dir_;
  FaultInjectionEnv env_{Env::Default()};
};

TEST_F(FaultInjectionEnvTest, DropUnsyncedDataKeepsOnlySyncedBytes) {
  std::string synced = dir_ + "/a", unsynced_dir = dir_ + "/b";
  std::unique_ptr<WritableFile> a, b;
  ASSERT_TRUE(env_.NewWritableFile(synced, &a).ok());
  ASSERT_TRUE(a->Append("durable").ok());
  ASSERT_TRUE(a->Sync().ok());
  ASSERT_TRUE(env_.SyncDir(dir_).ok());
  ASSERT_TRUE(a->Append("-lost").ok());
  ASSERT_TRUE(env_.NewWritableFile(unsynced_dir, &b).ok());
  ASSERT_TRUE(b->Append("x").ok());
  ASSERT_TRUE(b->Sync().ok());  // data synced, but the directory entry never was
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Size(synced), 7u);
  EXPECT_FALSE(Env::Default()->FileExists(unsynced_dir));
}

TEST_F(FaultInjectionEnvTest, UnsyncedOverwritesOfZerosTurnBackIntoZeros) {
  std::string path = dir_ + "/z";
  std::unique_ptr<WritableFile> f;
  ASSERT_TRUE(env_.NewWritableFile(path, &f).ok());
  ASSERT_TRUE(f->Append("durable").ok());
  ASSERT_TRUE(f->WriteZeros(7, 100).ok());
  EXPECT_EQ(Size(path), 107u);
  ASSERT_TRUE(f->Sync().ok());
  ASSERT_TRUE(env_.SyncDir(dir_).ok());
  ASSERT_TRUE(f->Append("-lost").ok());  // overwrites zeros: the size stays
  EXPECT_EQ(Size(path), 107u);
  ASSERT_TRUE(f->Close().ok());
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  std::string want = "durable" + std::string(100, '\0');
  std::string got(want.size() + 1, 'x');
  std::unique_ptr<SequentialFile> in;
  ASSERT_TRUE(Env::Default()->NewSequentialFile(path, &in).ok());
  std::string_view read;
  ASSERT_TRUE(in->Read(got.size(), &read, got.data()).ok());
  EXPECT_EQ(read, want);
}

TEST_F(FaultInjectionEnvTest, FailsTheNthSync) {
  std::unique_ptr<WritableFile> f;
  ASSERT_TRUE(env_.NewWritableFile(dir_ + "/f", &f).ok());
  env_.FailSyncAfter(2);
  EXPECT_TRUE(f->Sync().ok());
  EXPECT_TRUE(f->Sync().IsIOError());
  EXPECT_TRUE(f->Sync().ok());  // not sticky
  env_.FailSyncAfter(1, /*sticky=*/true);
  EXPECT_TRUE(f->Sync().IsIOError());
  EXPECT_TRUE(f->Sync().IsIOError());
}

TEST_F(FaultInjectionEnvTest, NoSpaceWritesWhatFits) {
  std::unique_ptr<WritableFile> f;
  ASSERT_TRUE(env_.NewWritableFile(dir_ + "/f", &f).ok());
  env_.SetSpaceLeft(10);
  EXPECT_TRUE(f->Append("123456").ok());
  EXPECT_TRUE(f->Append("abcdefgh").IsNoSpace());
  EXPECT_EQ(Size(dir_ + "/f"), 10u);
  env_.SetSpaceLeft(-1);
  EXPECT_TRUE(f->Append("z").ok());
}

TEST_F(FaultInjectionEnvTest, ShortWrite) {
  std::unique_ptr<WritableFile> f;
  ASSERT_TRUE(env_.NewWritableFile(dir_ + "/f", &f).ok());
  env_.FailAppendAfter(1);
  EXPECT_TRUE(f->Append("12345678").IsIOError());
  EXPECT_EQ(Size(dir_ + "/f"), 4u);
}

}  // namespace
}  // namespace kvstore
