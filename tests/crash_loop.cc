// The crash loop, embedded: a child process writes batches from many
// threads, sync, async and (every fourth thread) without sync, and reports
// each batch on stdout only once the DB acknowledged it. The parent kill -9s the child at a random moment, reopens
// the store, and checks that every acknowledged batch is present in full and
// that no batch, acknowledged or not, is partly visible.
//
// With --server, the same through a kvserver child instead
// (tests/crash_server.cc): --threads client connections.
//
//   crash_loop --cycles N [--server] [--unsynced] [--dir D] [--threads T] [--seed S] [--keep]
//
// --unsynced: every write of the embedded child goes without sync.
//
// Prints "crash_loop: cycles=N acknowledged=A lost=L partial=P" (with
// --server: "crash_loop(server): ...") and exits 1 when anything was lost
// or partly visible.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kvstore/db.h"
#include "tests/crash_server.h"

namespace {

using kvstore::DB;
using kvstore::Options;
using kvstore::Status;
using kvstore::WriteBatch;
using kvstore::WriteOptions;

// --unsynced: every write of the child goes without sync (a kill -9 is a
// crash of the process, which such a write survives once acknowledged).
bool unsynced_writes = false;

// Keys "b<id>-<j>"; every value is "<id>:<n>" plus padding, so that a key on
// its own says which batch it came from and how large that batch was.
std::string BatchKey(uint64_t id, uint32_t j) { return "b" + std::to_string(id) + "-" + std::to_string(j); }

bool ParseValue(std::string_view v, uint64_t* id, uint32_t* n) {
  return std::sscanf(std::string(v.substr(0, 64)).c_str(), "%lu:%u", id, n) == 2;
}

void WriteLine(const std::string& line) {
  // One write(2) per line: pipe writes below PIPE_BUF are atomic.
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t w = ::write(STDOUT_FILENO, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      std::_Exit(3);
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
}

int RunChild(const std::string& dir, uint64_t base_id, int threads) {
  std::unique_ptr<DB> db;
  Options options;
  options.memtable_budget = 256 << 10;  // flush and compact all the time, so kills land in them too
  Status s = DB::Open(options, dir, &db);
  if (!s.ok()) {
    std::fprintf(stderr, "child: open: %s\n", s.ToString().c_str());
    return 2;
  }
  WriteLine("ready\n");
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; t++) {
    workers.emplace_back([&, t] {
      std::mt19937_64 rng(base_id + static_cast<uint64_t>(t));
      std::atomic<int> in_flight{0};
      for (uint64_t i = 0;; i++) {
        uint64_t id = base_id + (static_cast<uint64_t>(t) << 24) + i;
        uint32_t n = 1 + static_cast<uint32_t>(rng() % 8);
        WriteBatch batch;
        std::string value = std::to_string(id) + ":" + std::to_string(n) + ":" + std::string(rng() % 200, 'v');
        for (uint32_t j = 0; j < n; j++) batch.Put(BatchKey(id, j), value);
        std::string line = std::to_string(id) + " " + std::to_string(n) + "\n";
        if (t % 2 == 1 && in_flight.load() < 16) {
          // Odd threads keep several async writes in flight.
          in_flight++;
          WriteOptions wo;
          wo.sync = !unsynced_writes;
          db->WriteAsync(wo, std::move(batch), [line, &in_flight](Status st) {
            if (st.ok()) WriteLine(line);
            in_flight--;
          });
        } else {
          // Every fourth thread writes without sync, mixed into the groups
          // of the others.
          WriteOptions wo;
          wo.sync = !unsynced_writes && t % 4 != 2;
          if (db->Write(wo, &batch).ok()) WriteLine(line);
        }
      }
    });
  }
  for (auto& w : workers) w.join();  // never returns: the parent kills us
  return 0;
}

struct Totals {
  uint64_t acknowledged = 0;
  uint64_t lost = 0;
  uint64_t partial = 0;
  uint64_t tables = 0;  // in the store after the last reopen
};

// Starts the child, reads acknowledgements until run_ms after it is ready
// (or after it started, when kill_in_recovery), kills it with SIGKILL, then
// drains what it had already written to the pipe.
bool RunCycle(const std::string& self, const std::string& dir, uint64_t base_id, int threads, int run_ms,
              bool kill_in_recovery, std::map<uint64_t, uint32_t>* acked) {
  int fds[2];
  if (::pipe(fds) != 0) return false;
  pid_t pid = ::fork();
  if (pid < 0) return false;
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    std::string id = std::to_string(base_id), th = std::to_string(threads);
    ::execl(self.c_str(), self.c_str(), "--child", dir.c_str(), "--base-id", id.c_str(), "--threads",
            th.c_str(), unsynced_writes ? "--unsynced" : static_cast<char*>(nullptr), static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  ::close(fds[1]);
  std::string pending;
  bool ready = false;
  auto consume = [&](const char* data, size_t len) {
    pending.append(data, len);
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      uint64_t id;
      uint32_t n;
      if (pending.compare(0, nl, "ready") == 0) {
        ready = true;
      } else if (std::sscanf(pending.c_str(), "%lu %u", &id, &n) == 2) {
        (*acked)[id] = n;
      }
      pending.erase(0, nl + 1);
    }
  };
  char buf[65536];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(run_ms);
  if (!kill_in_recovery) deadline += std::chrono::seconds(60);  // until ready, at most
  bool child_exited = false;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fds[0], POLLIN, 0};
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now())
                                    .count());
    if (::poll(&p, 1, std::max(left, 0)) > 0) {
      ssize_t r = ::read(fds[0], buf, sizeof(buf));
      if (r <= 0) {
        child_exited = true;
        break;
      }
      bool was_ready = ready;
      consume(buf, static_cast<size_t>(r));
      if (!kill_in_recovery && ready && !was_ready) {
        deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(run_ms);
      }
    }
  }
  ::kill(pid, SIGKILL);
  for (;;) {
    ssize_t r = ::read(fds[0], buf, sizeof(buf));
    if (r <= 0) break;
    consume(buf, static_cast<size_t>(r));
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (child_exited && !(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
    std::fprintf(stderr, "crash_loop: the child stopped on its own (status %d)\n", status);
    return false;
  }
  return true;
}

bool Verify(const std::string& dir, const std::map<uint64_t, uint32_t>& acked, Totals* totals) {
  std::unique_ptr<DB> db;
  Status s = DB::Open(Options{}, dir, &db);
  if (!s.ok()) {
    std::fprintf(stderr, "crash_loop: reopen failed: %s\n", s.ToString().c_str());
    return false;
  }
  // One scan: how many keys of each batch are there.
  std::map<uint64_t, std::pair<uint32_t, uint32_t>> seen;  // id -> (size, keys found)
  auto it = db->NewIterator(kvstore::ReadOptions{});
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    uint64_t id;
    uint32_t n;
    if (!ParseValue(it->value(), &id, &n)) {
      std::fprintf(stderr, "crash_loop: unreadable value under %s\n", std::string(it->key()).c_str());
      return false;
    }
    auto& e = seen[id];
    e.first = n;
    e.second++;
  }
  // Every acknowledged batch is there in full...
  uint64_t lost = 0;
  for (const auto& [id, n] : acked) {
    auto f = seen.find(id);
    uint32_t found = f == seen.end() ? 0 : f->second.second;
    if (found != n) {
      if (lost < 5) std::fprintf(stderr, "crash_loop: LOST acknowledged batch %lu (%u of %u keys)\n", id, found, n);
      lost++;
    }
  }
  // ...and no batch, acknowledged or not, is partly there.
  uint64_t partial = 0;
  for (const auto& [id, e] : seen) {
    if (e.first != e.second) {
      if (partial < 5) std::fprintf(stderr, "crash_loop: PARTIAL batch %lu: %u of %u keys\n", id, e.second, e.first);
      partial++;
    }
  }
  totals->lost += lost;
  totals->partial += partial;
  const kvstore::DBStats st = db->GetStats();
  totals->tables = 0;
  for (const auto& level : st.levels) totals->tables += level.files;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  int cycles = 20, threads = 8;
  uint64_t seed = 0;
  std::string dir, child_dir;
  uint64_t base_id = 0;
  bool keep = false, server = false;
  bool threads_given = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "crash_loop: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--cycles") cycles = std::stoi(next());
    else if (a == "--threads") {
      threads = std::stoi(next());
      threads_given = true;
    }
    else if (a == "--seed") seed = std::stoull(next());
    else if (a == "--dir") dir = next();
    else if (a == "--child") child_dir = next();
    else if (a == "--base-id") base_id = std::stoull(next());
    else if (a == "--keep") keep = true;
    else if (a == "--server") server = true;
    else if (a == "--unsynced") unsynced_writes = true;
    else {
      std::fprintf(stderr, "usage: crash_loop --cycles N [--server] [--unsynced] [--dir D] [--threads T] [--seed S] [--keep]\n");
      return 2;
    }
  }
  if (!child_dir.empty()) return RunChild(child_dir, base_id, threads);

  if (seed == 0) seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  if (server) {
    crash_loop::ServerLoopOptions o;
    o.kvserver = KVSERVER_PATH;
    o.cycles = cycles;
    if (threads_given) o.clients = threads;
    o.seed = seed;
    o.dir = dir;
    o.keep = keep;
    return crash_loop::RunServerLoop(o);
  }
  if (dir.empty()) {
    dir = (std::filesystem::temp_directory_path() / ("kvstore_crash_" + std::to_string(::getpid()))).string();
  }
  std::filesystem::remove_all(dir);
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::printf("crash_loop: dir=%s seed=%lu threads=%d\n", dir.c_str(), seed, threads);
  std::mt19937_64 rng(seed);
  std::map<uint64_t, uint32_t> acked;
  Totals totals;
  int done = 0;
  bool ok = true;
  for (int c = 0; c < cycles && ok; c++) {
    // A fresh store every few cycles bounds the data (the memtable never
    // flushes yet) while still recovering from several crashes in a row.
    if (c % 5 == 0) {
      totals.acknowledged += acked.size();
      acked.clear();
      std::filesystem::remove_all(dir);
    }
    // Now and then kill the child while it is still recovering.
    const bool kill_in_recovery = c % 5 != 0 && rng() % 10 == 0;
    const int run_ms = kill_in_recovery ? static_cast<int>(rng() % 30) : 20 + static_cast<int>(rng() % 280);
    size_t before = acked.size();
    ok = RunCycle(self, dir, (static_cast<uint64_t>(c) + 1) << 40, threads, run_ms, kill_in_recovery, &acked) &&
         Verify(dir, acked, &totals);
    done++;
    std::printf("cycle %d: killed %d ms after %s, %zu batches acknowledged, %lu tables, lost so far %lu, "
                "partial so far %lu\n",
                c + 1, run_ms, kill_in_recovery ? "start (in recovery)" : "ready", acked.size() - before,
                totals.tables, totals.lost, totals.partial);
    std::fflush(stdout);
  }
  totals.acknowledged += acked.size();
  std::printf("crash_loop: cycles=%d acknowledged=%lu lost=%lu partial=%lu\n", done, totals.acknowledged,
              totals.lost, totals.partial);
  if (!keep) std::filesystem::remove_all(dir);
  return ok && totals.lost == 0 && totals.partial == 0 ? 0 : 1;
}
