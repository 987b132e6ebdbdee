#include "cluster/node.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

extern "C" {
// raft.h has no extern "C" guards of its own.
#include <raft.h>
#include <raft/uv.h>
}
#include <uv.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cluster/swappable_db.h"
#include "cluster/transfer.h"
#include "net/write_command.h"

namespace kvstore::cluster {

namespace fs = std::filesystem;
using net::ReplicaAnswer;
using json = nlohmann::json;

namespace {

// Log entry format (version 1), little-endian:
//   u32 version, u32 length of everything before the padding,
//   u64 proposer nonce, u64 proposer sequence (together: which pending
//   request, if any, is waiting here for the answers),
//   u32 command count, then per command u32 length + EncodeWriteCommand bytes,
//   zeros up to a multiple of 8 bytes: libraft 0.15 corrupts followers' logs
//   otherwise.
constexpr uint32_t kEntryVersion = 1;
constexpr size_t kEntryHeader = 4 + 4 + 8 + 8 + 4;

void PutU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
void PutU64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

size_t Pad8(size_t n) { return (n + 7) & ~size_t{7}; }

// Snapshot descriptor (the whole of a version-1 snapshot buffer): one text
// line, "kvstore-snapshot 1 <holder node id> <applied index> <checkpoint id>",
// zero-padded. The files stay in the holder's checkpoints/<id>.
struct Descriptor {
  uint64_t holder = 0;
  uint64_t applied = 0;
  std::string id;
};

bool ParseDescriptor(const raft_buffer& buf, Descriptor* d) {
  std::string text(static_cast<const char*>(buf.base), strnlen(static_cast<const char*>(buf.base), buf.len));
  char id[128];
  unsigned long long holder, applied;
  int version;
  if (std::sscanf(text.c_str(), "kvstore-snapshot %d %llu %llu %127s", &version, &holder, &applied, id) != 4 ||
      version != 1) {
    return false;
  }
  *d = {holder, applied, id};
  return true;
}

// Written (synced) before each checkpoint, to make the engine durable; its
// value is the snapshot's index, for the curious. Like kAppliedIndexKey, no
// client can name it.
constexpr std::string_view kSnapshotSyncKey = "\xff\xffkvstore/raft_snapshot_sync";

std::string CheckpointId(uint64_t applied) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%020" PRIu64, applied);
  return buf;
}

Status SyncPath(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return Status::IOError("open " + path + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Status::IOError("fsync " + path + ": " + std::strerror(errno));
  return Status::OK();
}

// Writes path atomically: temp file, fsync, rename, fsync of the directory.
Status WriteFileAtomic(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << contents;
    if (!out.good()) return Status::IOError("write " + tmp);
  }
  Status s = SyncPath(tmp, false);
  if (!s.ok()) return s;
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return Status::IOError("rename " + tmp + ": " + ec.message());
  return SyncPath(fs::path(path).parent_path().string(), true);
}

// raft_io's async_work (io version 2), which libraft 0.15's core uses for
// async snapshots (fsm version 3) but Debian's raft_uv 0.15 does not provide
// (its io is version 1; raft_init then refuses fsm version 3). Ours runs the
// work on libuv's thread pool and its callback back on the loop thread, as
// the contract in raft.h asks. The loop is the calling thread's: each Node's
// loop runs on a thread of its own, and libraft calls this from there.
thread_local uv_loop_t* tls_loop = nullptr;

struct AsyncWork {
  uv_work_t work;
  raft_io_async_work* req;
  raft_io_async_work_cb cb;
  int status;
};

int IoAsyncWork(raft_io* /*io*/, raft_io_async_work* req, raft_io_async_work_cb cb) {
  auto* a = new AsyncWork{{}, req, cb, 0};
  a->work.data = a;
  int rv = uv_queue_work(
      tls_loop, &a->work,
      [](uv_work_t* w) {
        auto* a = static_cast<AsyncWork*>(w->data);
        a->status = a->req->work(a->req);
      },
      [](uv_work_t* w, int uv_status) {
        auto* a = static_cast<AsyncWork*>(w->data);
        const int status = uv_status != 0 ? RAFT_CANCELED : a->status;
        raft_io_async_work* req = a->req;
        raft_io_async_work_cb cb = a->cb;
        delete a;
        cb(req, status);
      });
  if (rv != 0) {
    delete a;
    return RAFT_IOERR;
  }
  return 0;
}

std::string RaftHost(const std::string& address) { return address.substr(0, address.rfind(':')); }

const char* RoleName(int state) {
  switch (state) {
    case RAFT_FOLLOWER: return "follower";
    case RAFT_CANDIDATE: return "candidate";
    case RAFT_LEADER: return "leader";
    default: return "unavailable";
  }
}

}  // namespace

struct Node::Impl {
  NodeOptions opt;
  std::string raft_dir, ckpt_dir;

  std::unique_ptr<SwappableDB> db;
  uint64_t store_gen = 0;                              // loop thread after Open
  std::shared_ptr<std::atomic<bool>> store_obsolete;  // the current store's "delete me when closed"
  uint64_t db_applied = 0;                             // loop thread after Open

  std::unique_ptr<CheckpointServer> transfer_server;

  // Identifies this process's proposals in the log (see the entry format).
  uint64_t nonce = 0;
  uint64_t next_entry = 1;

  uv_loop_t loop{};
  uv_async_t async{};
  uv_timer_t timer{};
  raft_uv_transport transport{};
  raft_io io{};
  raft_fsm fsm{};
  struct raft raft{};
  std::thread thread;

  struct Proposal {
    std::string command;
    Answer done;
  };
  struct TransferRequest {
    uint64_t to;
    Answer done;
  };
  // A log entry this node proposed, alive until libraft's callback.
  struct Entry {
    struct raft_apply req;
    Impl* node;
    uint64_t seq;
    std::vector<Answer> waiting;
    std::vector<ReplicaAnswer> answers;  // filled by Apply
    bool applied = false;
    raft_index applied_at = 0;
    // Committed while a snapshot install was in progress: applied (and
    // answered) once the installed store is in (see FsmRestore).
    bool deferred = false;
    bool committed = false;  // libraft's callback has run
  };
  struct Barrier {
    struct raft_barrier req;
    Impl* node;
    std::vector<Answer> waiting;
  };
  struct Transfer {
    struct raft_transfer req;
    Impl* node;
    Answer done;
  };

  std::mutex mu;
  std::deque<Proposal> proposals;          // guarded by mu
  std::vector<Answer> reads;               // guarded by mu
  std::deque<TransferRequest> transfers;   // guarded by mu
  bool stopping = false;                   // guarded by mu
  bool loop_running = false;               // guarded by mu

  // The snapshot libraft is taking (fsm version 3): FsmSnapshot picks the
  // checkpoint on the loop thread, FsmSnapshotAsync makes it on a libuv
  // worker, FsmSnapshotFinalize ends it on the loop thread. libraft takes one
  // at a time; the worker reads these only between the first two.
  struct PendingSnapshot {
    bool active = false;
    uint64_t applied = 0;
    std::string id;
    bool made = false;  // set by the worker
  };
  PendingSnapshot pending_snapshot;
  // Test hook (KVSTORE_TEST_SNAPSHOT_DELAY_MS): each checkpoint takes this
  // much longer to make, as a large store's would.
  unsigned test_snapshot_delay_ms = 0;

  // Loop thread only.
  bool closing = false;
  bool close_after_snapshot = false;  // Stop arrived while a snapshot was being made
  std::unordered_map<uint64_t, Entry*> entries;  // by seq
  std::vector<Answer> barrier_waiting;
  Barrier* barrier_in_flight = nullptr;
  Transfer* transfer_in_flight = nullptr;

  // A snapshot install (see FsmRestore). libraft has already taken this
  // node's log and last applied index to the snapshot's when FsmRestore
  // returns, but the checkpoint behind it is fetched and opened on a thread
  // of its own: meanwhile the node votes, takes entries and answers
  // heartbeats, and the entries committed meanwhile wait in order in
  // deferred_entries (reads confirmed meanwhile in deferred_reads) until the
  // new store is in.
  struct InstallResult {
    uint64_t gen = 0;
    std::string store_name;
    std::shared_ptr<DB> store;
    uint64_t applied = 0;
    std::shared_ptr<std::atomic<bool>> obsolete;
  };
  bool installing = false;  // loop thread
  uint64_t install_gen = 0;  // loop thread: the install that counts
  Descriptor install_target;  // loop thread
  std::deque<std::pair<raft_index, std::string>> deferred_entries;  // loop thread
  std::vector<Answer> deferred_reads;                                // loop thread
  uv_async_t install_async{};
  std::mutex install_mu;
  bool install_async_open = false;                    // guarded by install_mu
  std::vector<InstallResult> install_results;         // guarded by install_mu
  std::vector<std::thread> install_threads;           // loop thread
  std::shared_ptr<std::atomic<bool>> install_cancel;  // the running worker's
  std::atomic<bool> installing_now{false};            // for other threads
  std::atomic<uint64_t> applied_now{0};               // db_applied, for other threads
  std::atomic<uint64_t> install_attempts_failed{0};
  unsigned test_install_delay_ms = 0;  // KVSTORE_TEST_INSTALL_DELAY_MS
  // KVSTORE_TEST_INSTALLING_KEEPS_LEADERSHIP: no HandOffWhileInstalling, so
  // that a test can watch a leader wait for its store.
  bool keep_leadership_while_installing = false;
  std::mutex checkpoint_mu;            // one MakeCheckpoint at a time

  // Copied from raft on the loop thread for stats and health.
  struct Snapshot {
    int state = RAFT_UNAVAILABLE;
    uint64_t term = 0, leader = 0, commit = 0, applied = 0, last_index = 0, store_applied = 0;
    std::vector<std::pair<uint64_t, uint64_t>> match;  // (id, match index), on a leader
  };
  mutable std::mutex stats_mu;
  Snapshot stats;                         // guarded by stats_mu
  std::atomic<uint64_t> snapshots_taken{0}, snapshots_installed{0}, entries_proposed{0},
      commands_proposed{0}, leader_changes{0};
  uint64_t last_leader = 0;  // loop thread

  Status OpenStore();
  Status Start();
  void Run(std::promise<Status>* started);
  void Shutdown();

  std::string TransferAddress(uint64_t id) const {
    if (id == 0 || id > opt.peers.size()) return "";
    if (!opt.peer_transfers.empty()) return opt.peer_transfers[id - 1];
    const std::string& raft_addr = opt.peers[id - 1];
    int port = std::atoi(raft_addr.substr(raft_addr.rfind(':') + 1).c_str());
    return RaftHost(raft_addr) + ":" + std::to_string(port + 1000);
  }
  std::string ClientAddress(uint64_t id) const {
    if (id == 0 || id > opt.peer_clients.size()) return "";
    return opt.peer_clients[id - 1];
  }
  // Loop thread: the not_leader answer, naming the leader when known.
  ReplicaAnswer NotLeader() {
    raft_id id = 0;
    const char* address = nullptr;
    raft_leader(&raft, &id, &address);
    std::string client = ClientAddress(id);
    if (client.empty()) {
      return ReplicaAnswer::Error("not_leader", "this node is not the leader, and no leader is known yet");
    }
    return ReplicaAnswer::Error("not_leader", "this node is not the leader",
                                json{{"leader", client}, {"leader_id", id}}.dump());
  }
  static ReplicaAnswer Unavailable(const std::string& why, bool unknown_outcome) {
    return ReplicaAnswer::Error("unavailable", why,
                                unknown_outcome ? std::string(R"({"outcome":"unknown"})") : std::string());
  }
  // appended: the entry reached the log, so it may still commit under
  // another leader; only a refusal before that is a definite failure.
  ReplicaAnswer FromRaftError(int rv, bool appended) {
    if (rv == RAFT_NOTLEADER && !appended) return NotLeader();
    if (rv == RAFT_LEADERSHIPLOST || rv == RAFT_NOTLEADER || (appended && rv == RAFT_SHUTDOWN)) {
      return Unavailable(std::string("leadership lost before the write was acknowledged; it may or may not "
                                     "have been applied (") + raft_strerror(rv) + ")",
                         true);
    }
    return Unavailable(std::string("raft: ") + raft_strerror(rv), appended);
  }

  // Loop thread.
  static void OnAsync(uv_async_t* handle);
  static void OnTimer(uv_timer_t* handle);
  static void OnApplied(struct raft_apply* req, int status, void* result);
  static void OnBarrier(struct raft_barrier* req, int status);
  static void OnTransfer(struct raft_transfer* req);
  static void OnRaftClosed(struct raft* r);
  static int FsmApply(raft_fsm* fsm, const raft_buffer* buf, void** result);
  static int FsmSnapshot(raft_fsm* fsm, raft_buffer* bufs[], unsigned* n_bufs);
  static int FsmRestore(raft_fsm* fsm, raft_buffer* buf);
  static int FsmSnapshotAsync(raft_fsm* fsm, raft_buffer* bufs[], unsigned* n_bufs);
  static int FsmSnapshotFinalize(raft_fsm* fsm, raft_buffer* bufs[], unsigned* n_bufs);
  Status MakeCheckpoint(uint64_t applied, const std::string& id);
  bool CheckpointsNamedBySnapshots(std::set<std::string>* ids);
  void CloseRaft();
  void ProposeBatch(std::vector<Proposal>& batch, size_t first, size_t last);
  void StartBarrier();
  void RefreshStats();
  void SetNoDelay();
  Entry* ApplyEntry(raft_index index, const raft_buffer& buf);
  static void FinishEntry(Entry* e, int status);
  void StartInstall(const Descriptor& d);
  void InstallWorker(Descriptor d, std::string store_name, uint64_t gen,
                     std::shared_ptr<std::atomic<bool>> cancel);
  Status FetchForInstall(const Descriptor& d, const std::atomic<bool>& cancel);
  Status PrepareStore(const Descriptor& d, const std::string& name, InstallResult* out);
  static void OnInstallDone(uv_async_t* handle);
  void StopInstallWorkers();
  void HandOffWhileInstalling();
  std::string NewestCheckpoint(const std::string& min_id);
  Status OpenStoreAt(const std::string& name, std::shared_ptr<DB>* db, uint64_t* applied,
                     std::shared_ptr<std::atomic<bool>>* obsolete);
  void CollectCheckpoints(const std::string& keep);
};

// ---- the store ------------------------------------------------------------

Status Node::Impl::OpenStoreAt(const std::string& name, std::shared_ptr<DB>* out, uint64_t* applied,
                               std::shared_ptr<std::atomic<bool>>* obsolete) {
  const std::string dir = opt.data_dir + "/" + name;
  std::unique_ptr<DB> db;
  Status s = DB::Open(opt.db_options, dir, &db);
  if (!s.ok()) return s;
  std::string value;
  s = db->Get(ReadOptions{}, kAppliedIndexKey, &value);
  if (s.IsNotFound()) {
    *applied = 0;
  } else if (!s.ok()) {
    return s;
  } else {
    *applied = std::strtoull(value.c_str(), nullptr, 10);
  }
  auto flag = std::make_shared<std::atomic<bool>>(false);
  // A store replaced by a snapshot install is deleted once its last reader
  // lets go of it.
  *out = std::shared_ptr<DB>(db.release(), [dir, flag](DB* d) {
    delete d;
    if (flag->load()) {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  });
  *obsolete = flag;
  return Status::OK();
}

Status Node::Impl::OpenStore() {
  std::error_code ec;
  for (const std::string& d : {opt.data_dir, raft_dir, ckpt_dir}) {
    fs::create_directories(d, ec);
    if (ec) return Status::IOError("cannot create " + d + ": " + ec.message());
  }
  std::string current = "store-1";
  {
    std::ifstream in(opt.data_dir + "/STORE");
    std::string line;
    if (std::getline(in, line) && line.starts_with("store-")) current = line;
  }
  store_gen = std::strtoull(current.c_str() + 6, nullptr, 10);
  // Leftovers of an install cut short: stores not named by STORE, partial
  // fetches.
  for (const auto& e : fs::directory_iterator(opt.data_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("store-") && name != current) fs::remove_all(e.path(), ec);
  }
  for (const auto& e : fs::directory_iterator(ckpt_dir, ec)) {
    if (e.path().extension() == ".fetch" || e.path().extension() == ".tmp") fs::remove_all(e.path(), ec);
  }
  std::shared_ptr<DB> store;
  Status s = OpenStoreAt(current, &store, &db_applied, &store_obsolete);
  if (!s.ok()) return s;
  if (!fs::exists(opt.data_dir + "/STORE")) {
    s = WriteFileAtomic(opt.data_dir + "/STORE", current + "\n");
    if (!s.ok()) return s;
  }
  db = std::make_unique<SwappableDB>(std::move(store));
  applied_now = db_applied;
  spdlog::info("node {}: store {} holds the log up to index {}", opt.id, current, db_applied);
  return Status::OK();
}

// Worker thread. Makes sure ckpt_dir/<d.id> holds a store with the log at
// least up to d.applied: the holder first (any peer that installed the same
// snapshot has it under the same id), then a checkpoint at least as new from
// any peer (NEWEST), which is how a follower gets on when the holder is gone
// for good. Whatever arrives is kept under d.id: a checkpoint's id is a lower
// bound on what its store holds, never more.
Status Node::Impl::FetchForInstall(const Descriptor& d, const std::atomic<bool>& cancel) {
  const std::string dir = ckpt_dir + "/" + d.id;
  std::error_code ec;
  if (fs::exists(dir, ec)) return Status::OK();
  std::vector<uint64_t> order = {d.holder};
  for (uint64_t id = 1; id <= opt.peers.size(); ++id) {
    if (id != d.holder && id != opt.id) order.push_back(id);
  }
  const std::string tmp = dir + ".fetch";
  auto fetch = [&](uint64_t peer, const std::string& id) {
    fs::remove_all(tmp, ec);
    Status s = FetchCheckpoint(TransferAddress(peer), id, tmp, 5000);
    if (s.ok()) {
      fs::rename(tmp, dir, ec);
      if (ec) s = Status::IOError("rename " + tmp + ": " + ec.message());
      if (s.ok()) s = SyncPath(ckpt_dir, true);
    }
    if (!s.ok()) {
      spdlog::warn("node {}: fetching checkpoint {} from node {}: {}", opt.id, id, peer, s.ToString());
      fs::remove_all(tmp, ec);
    }
    return s;
  };
  Status s = Status::NotFound("no peer has checkpoint " + d.id);
  for (uint64_t peer : order) {
    if (cancel || peer == opt.id) continue;
    if ((s = fetch(peer, d.id)).ok()) return s;
  }
  for (uint64_t peer : order) {
    if (cancel || peer == opt.id) continue;
    std::string newer;
    Status found = FindNewestCheckpoint(TransferAddress(peer), d.id, &newer, 5000);
    if (!found.ok()) {
      s = found;
      continue;
    }
    spdlog::info("node {}: checkpoint {} unavailable; fetching {} from node {} instead", opt.id, d.id, newer, peer);
    if ((s = fetch(peer, newer)).ok()) return s;
  }
  return s;
}

// Worker thread: a new store from the checkpoint, opened. Tables are
// hard-linked (immutable), the rest copied, since the store appends to its
// WAL and manifest.
Status Node::Impl::PrepareStore(const Descriptor& d, const std::string& name, InstallResult* out) {
  const std::string dir = ckpt_dir + "/" + d.id;
  const std::string store_dir = opt.data_dir + "/" + name;
  std::error_code ec;
  fs::remove_all(store_dir, ec);
  fs::create_directories(store_dir, ec);
  if (ec) return Status::IOError("cannot create " + store_dir + ": " + ec.message());
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().filename() == kChecksumsFile) continue;  // the transfer's, not the store's
    const fs::path to = fs::path(store_dir) / e.path().filename();
    if (e.path().extension() == ".sst") {
      fs::create_hard_link(e.path(), to, ec);
    } else {
      fs::copy_file(e.path(), to, ec);
      if (!ec) {
        Status s = SyncPath(to.string(), false);
        if (!s.ok()) return s;
      }
    }
    if (ec) return Status::IOError("cannot copy " + e.path().string() + ": " + ec.message());
  }
  if (ec) return Status::IOError("cannot list " + dir + ": " + ec.message());
  Status s = SyncPath(store_dir, true);
  if (!s.ok()) return s;
  s = OpenStoreAt(name, &out->store, &out->applied, &out->obsolete);
  if (!s.ok()) return s;
  if (out->applied < d.applied) {
    out->obsolete->store(true);
    out->store.reset();
    return Status::Corruption("checkpoint " + d.id + " holds index " + std::to_string(out->applied) + ", not " +
                              std::to_string(d.applied));
  }
  out->store_name = name;
  return Status::OK();
}

// A thread of its own (not libuv's pool, which snapshots use): tries until
// it has the store or is cancelled. Giving up is not an option: libraft
// already counts the snapshot as applied here.
void Node::Impl::InstallWorker(Descriptor d, std::string store_name, uint64_t gen,
                               std::shared_ptr<std::atomic<bool>> cancel) {
  auto pause = [&](unsigned ms) {
    for (unsigned waited = 0; waited < ms && !*cancel; waited += 20) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  pause(test_install_delay_ms);
  unsigned backoff_ms = 100;
  while (!*cancel) {
    InstallResult r;
    Status s = FetchForInstall(d, *cancel);
    if (s.ok() && !*cancel) s = PrepareStore(d, store_name, &r);
    if (*cancel) {
      if (r.obsolete) r.obsolete->store(true);
      break;
    }
    if (s.ok()) {
      r.gen = gen;
      std::lock_guard lock(install_mu);
      if (install_async_open) {
        install_results.push_back(std::move(r));
        uv_async_send(&install_async);
      } else {
        r.obsolete->store(true);
      }
      return;
    }
    install_attempts_failed++;
    spdlog::error("node {}: installing snapshot {} (index {}): {}; retrying", opt.id, d.id, d.applied, s.ToString());
    std::error_code ec;
    fs::remove_all(opt.data_dir + "/" + store_name, ec);
    if (s.IsCorruption()) fs::remove_all(ckpt_dir + "/" + d.id, ec);  // fetch it again
    pause(backoff_ms);
    backoff_ms = std::min(backoff_ms * 2, 2000u);
  }
}

// Loop thread.
void Node::Impl::StartInstall(const Descriptor& d) {
  if (install_cancel) install_cancel->store(true);  // a newer snapshot overtook it
  install_cancel = std::make_shared<std::atomic<bool>>(false);
  installing = true;
  installing_now = true;
  install_target = d;
  ++install_gen;
  // Entries up to the snapshot are in it.
  while (!deferred_entries.empty() && deferred_entries.front().first <= d.applied) deferred_entries.pop_front();
  const std::string name = "store-" + std::to_string(store_gen + install_gen);
  spdlog::info("node {}: installing snapshot {} (index {}, held by node {})", opt.id, d.id, d.applied, d.holder);
  install_threads.emplace_back(&Impl::InstallWorker, this, d, name, install_gen, install_cancel);
}

void Node::Impl::OnInstallDone(uv_async_t* handle) {
  auto* n = static_cast<Impl*>(handle->data);
  std::vector<InstallResult> results;
  {
    std::lock_guard lock(n->install_mu);
    results.swap(n->install_results);
  }
  for (InstallResult& r : results) {
    if (!n->installing || r.gen != n->install_gen || n->closing) {
      r.obsolete->store(true);  // overtaken: deleted once closed
      continue;
    }
    Status s = WriteFileAtomic(n->opt.data_dir + "/STORE", r.store_name + "\n");
    if (!s.ok()) {
      // The old store stays current (and a restart installs again).
      spdlog::critical("node {}: cannot switch to the installed store: {}; retrying", n->opt.id, s.ToString());
      r.obsolete->store(true);
      n->install_attempts_failed++;
      n->StartInstall(n->install_target);
      continue;
    }
    n->store_obsolete->store(true);
    n->db->Swap(std::move(r.store));
    n->store_obsolete = std::move(r.obsolete);
    n->store_gen = std::strtoull(r.store_name.c_str() + 6, nullptr, 10);
    spdlog::info("node {}: installed checkpoint {} (index {} -> {}); applying {} entries committed meanwhile",
                 n->opt.id, n->install_target.id, n->db_applied, r.applied, n->deferred_entries.size());
    n->db_applied = r.applied;
    n->applied_now = r.applied;
    n->installing = false;
    n->installing_now = false;
    n->install_cancel.reset();
    n->snapshots_installed++;
    std::deque<std::pair<raft_index, std::string>> pending;
    pending.swap(n->deferred_entries);
    for (auto& [index, bytes] : pending) {
      Entry* mine = n->ApplyEntry(index, raft_buffer{bytes.data(), bytes.size()});
      if (mine != nullptr && mine->committed) FinishEntry(mine, 0);
    }
    // Entries of ours that the new store already held (it may be ahead of
    // the snapshot) were applied by another node: their answers are lost.
    std::vector<Entry*> left;
    for (auto& [seq, e] : n->entries) {
      if (e->deferred && e->committed) left.push_back(e);
    }
    for (Entry* e : left) FinishEntry(e, 0);
    std::vector<Answer> reads;
    reads.swap(n->deferred_reads);
    for (Answer& w : reads) w(ReplicaAnswer::Ok("null"));
  }
}

// Loop thread, or after the loop ended.
void Node::Impl::StopInstallWorkers() {
  if (install_cancel) install_cancel->store(true);
  for (std::thread& t : install_threads) {
    if (t.joinable()) t.join();
  }
  install_threads.clear();
}

// The transfer server's thread (NEWEST): a checkpoint whose store holds the
// log at least up to min_id, made now if need be.
std::string Node::Impl::NewestCheckpoint(const std::string& min_id) {
  std::error_code ec;
  std::string best;
  for (const auto& e : fs::directory_iterator(ckpt_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() == 20 && name.find_first_not_of("0123456789") == std::string::npos && name >= min_id &&
        name > best) {
      best = name;
    }
  }
  if (!best.empty()) return best;
  if (installing_now) return "";  // this node's store is behind its log
  const uint64_t applied = applied_now;
  const std::string id = CheckpointId(applied);
  if (id < min_id) return "";
  Status s = MakeCheckpoint(applied, id);
  if (!s.ok()) {
    spdlog::warn("node {}: checkpoint for a peer: {}", opt.id, s.ToString());
    return "";
  }
  spdlog::info("node {}: made checkpoint {} for a peer", opt.id, id);
  return id;
}

// The checkpoint ids that libraft's snapshots on disk name. Snapshots are
// stored uncompressed (see Run), so each data file is our descriptor. False
// when a snapshot file could not be read as one (it may be mid-write, or
// just removed): the caller must not trust the set alone then.
bool Node::Impl::CheckpointsNamedBySnapshots(std::set<std::string>* ids) {
  bool all = true;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(raft_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with("snapshot-") || name.ends_with(".meta") || name.ends_with(".tmp")) continue;
    std::ifstream in(e.path(), std::ios::binary);
    char buf[256] = {};
    in.read(buf, sizeof buf - 1);
    raft_buffer rb{buf, static_cast<size_t>(in.gcount())};
    Descriptor d;
    if (ParseDescriptor(rb, &d)) {
      ids->insert(d.id);
    } else {
      all = false;
    }
  }
  return all && !ec;
}

// Deletes the checkpoints that no snapshot names any more (libraft keeps the
// last two snapshots; a follower may be told to install either), except
// keep (the one just made, whose snapshot libraft has yet to store) and any
// that a peer is fetching right now (CheckpointServer::Retire says no; the
// next collection tries again).
void Node::Impl::CollectCheckpoints(const std::string& keep) {
  std::set<std::string> named;
  const bool sure = CheckpointsNamedBySnapshots(&named);
  named.insert(keep);
  std::error_code ec;
  std::vector<std::string> ids;
  for (const auto& e : fs::directory_iterator(ckpt_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() == 20 && name.find_first_not_of("0123456789") == std::string::npos) ids.push_back(name);
  }
  std::sort(ids.begin(), ids.end());
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string& id = ids[i];
    // Unsure which ones libraft names: keep the newest three as well (it
    // keeps two snapshots; ids grow with the index).
    if (named.count(id) > 0 || (!sure && i + 3 >= ids.size())) continue;
    if (transfer_server && !transfer_server->Retire(id)) {
      spdlog::info("node {}: keeping checkpoint {} while a peer fetches it", opt.id, id);
      continue;
    }
    fs::remove_all(ckpt_dir + "/" + id, ec);
  }
}

// ---- the state machine (loop thread) ----------------------------------------

Node::Impl::Entry* Node::Impl::ApplyEntry(raft_index index, const raft_buffer& buf) {
  const char* p = static_cast<const char*>(buf.base);
  uint64_t seq = 0;
  uint64_t entry_nonce = 0;
  std::vector<std::string_view> commands;
  bool ok = buf.len >= kEntryHeader && GetU32(p) == kEntryVersion && GetU32(p + 4) <= buf.len &&
            GetU32(p + 4) >= kEntryHeader;
  if (ok) {
    const size_t len = GetU32(p + 4);
    entry_nonce = GetU64(p + 8);
    seq = GetU64(p + 16);
    uint32_t count = GetU32(p + 24);
    size_t pos = kEntryHeader;
    for (uint32_t i = 0; i < count && ok; ++i) {
      if (pos + 4 > len) {
        ok = false;
        break;
      }
      uint32_t n = GetU32(p + pos);
      pos += 4;
      if (pos + n > len) {
        ok = false;
        break;
      }
      commands.emplace_back(p + pos, n);
      pos += n;
    }
  }
  Entry* mine = nullptr;
  if (ok && entry_nonce == nonce) {
    auto it = entries.find(seq);
    if (it != entries.end()) mine = it->second;
  }
  if (index <= db_applied) return mine;  // the store has it already (replay after a restart)

  std::vector<ReplicaAnswer> answers;
  WriteBatch batch;
  net::CommandOverlay overlay;
  DB* store = db.get();
  Status read_error;
  net::CommandReader read = [store, &read_error](std::string_view key, std::optional<std::string>* value) {
    std::string v;
    Status s = store->Get(ReadOptions{}, key, &v);
    if (s.IsNotFound()) return Status::OK();
    if (s.ok()) *value = std::move(v);
    if (!s.ok() && read_error.ok()) read_error = s;
    return s;
  };
  for (std::string_view c : commands) {
    net::WriteCommand cmd;
    if (!net::DecodeWriteCommand(c, &cmd)) {
      answers.push_back(ReplicaAnswer::Error("internal", "undecodable command in the log"));
      continue;
    }
    answers.push_back(net::EvaluateOnce(cmd, read, &overlay, &batch));
  }
  if (!ok) spdlog::error("node {}: malformed log entry at index {}; skipped", opt.id, index);
  if (!read_error.ok()) {
    // A cas or txn that could not read its keys here would apply nothing on
    // this node while the others apply it: the replicas would diverge for
    // good. Stop, as for a failed write, and replay from the log on restart.
    spdlog::critical("node {}: cannot read while applying index {}: {}; stopping", opt.id, index,
                     read_error.ToString());
    std::abort();
  }
  batch.Put(kAppliedIndexKey, std::to_string(index));
  // The Raft log is the durability point: the engine need not fsync here.
  // Snapshots flush the engine before libraft may drop log entries.
  WriteOptions wo;
  wo.sync = false;
  Status s = db->Write(wo, &batch);
  if (!s.ok()) {
    // Going on would leave this node's store behind its log forever; a
    // restart replays the entry from the log instead.
    spdlog::critical("node {}: cannot apply index {}: {}; stopping", opt.id, index, s.ToString());
    std::abort();
  }
  db_applied = index;
  applied_now = index;
  if (mine != nullptr) {
    mine->answers = std::move(answers);
    mine->applied = true;
    mine->applied_at = index;
  }
  return mine;
}

int Node::Impl::FsmApply(raft_fsm* fsm, const raft_buffer* buf, void** result) {
  auto* n = static_cast<Impl*>(fsm->data);
  *result = nullptr;
  // libraft applies entries strictly in order, right after last_applied.
  const raft_index index = n->raft.last_applied + 1;
  if (n->installing) {
    // The store is not there yet: keep the entry (libraft may free its
    // buffer) and whose it is, to answer when it is applied.
    n->deferred_entries.emplace_back(index, std::string(static_cast<const char*>(buf->base), buf->len));
    const char* p = static_cast<const char*>(buf->base);
    if (buf->len >= kEntryHeader && GetU32(p) == kEntryVersion && GetU64(p + 8) == n->nonce) {
      auto it = n->entries.find(GetU64(p + 16));
      if (it != n->entries.end()) it->second->deferred = true;
    }
    return 0;
  }
  n->ApplyEntry(index, *buf);
  // Always 0: a non-zero return makes libraft retry the entry forever, and a
  // failed cas is an answer, not a failure.
  return 0;
}

// Makes checkpoint id of the store (worker thread). It may hold entries
// applied after `applied` (apply goes on meanwhile): a store ahead of its
// snapshot is fine, since applying skips what the store already holds.
Status Node::Impl::MakeCheckpoint(uint64_t applied, const std::string& id) {
  // Snapshots (a libuv worker) and peers' NEWEST (the transfer thread) both
  // make checkpoints, possibly of the same id.
  std::lock_guard lock(checkpoint_mu);
  // Make the engine durable first: libraft drops log entries behind the
  // snapshot once it is stored, and the engine's WAL was written without
  // fsync. One synced write does it (the engine syncs a WAL segment when it
  // retires it, so only the current one can hold unsynced entries). Not
  // kAppliedIndexKey: the loop thread may have applied (and recorded) more.
  WriteBatch sync_batch;
  sync_batch.Put(kSnapshotSyncKey, std::to_string(applied));
  Status s = db->Write(WriteOptions{}, &sync_batch);
  const std::string dir = ckpt_dir + "/" + id;
  std::error_code ec;
  if (s.ok() && !fs::exists(dir, ec)) {
    const std::string tmp = dir + ".tmp";
    fs::remove_all(tmp, ec);
    s = db->Checkpoint(tmp);
    if (test_snapshot_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(test_snapshot_delay_ms));
    // The transfer's LIST reply, computed once here rather than per fetch.
    if (s.ok()) s = WriteChecksums(tmp);
    if (s.ok()) {
      fs::rename(tmp, dir, ec);
      if (ec) s = Status::IOError("rename " + tmp + ": " + ec.message());
    }
    if (s.ok()) s = SyncPath(ckpt_dir, true);
    if (!s.ok()) fs::remove_all(tmp, ec);
  }
  return s;
}

// Loop thread: only the descriptor. The checkpoint is made by
// FsmSnapshotAsync on a libuv worker, so heartbeats, elections and applying
// go on meanwhile; libraft stores the snapshot (and may truncate its log)
// only after that returned 0.
int Node::Impl::FsmSnapshot(raft_fsm* fsm, raft_buffer* bufs[], unsigned* n_bufs) {
  auto* n = static_cast<Impl*>(fsm->data);
  // While installing, the store is behind libraft's applied index: a
  // snapshot now would name a checkpoint without the entries it claims.
  if (n->pending_snapshot.active || n->closing || n->installing) return RAFT_BUSY;  // libraft retries later
  const std::string id = CheckpointId(n->db_applied);
  char text[128];
  int len = std::snprintf(text, sizeof text, "kvstore-snapshot 1 %" PRIu64 " %" PRIu64 " %s", n->opt.id,
                          n->db_applied, id.c_str());
  const size_t size = Pad8(static_cast<size_t>(len) + 1);
  auto* b = static_cast<raft_buffer*>(raft_malloc(sizeof(raft_buffer)));
  void* base = raft_calloc(1, size);
  if (b == nullptr || base == nullptr) {
    raft_free(b);
    raft_free(base);
    return RAFT_NOMEM;
  }
  std::memcpy(base, text, static_cast<size_t>(len));
  b->base = base;
  b->len = size;
  *bufs = b;
  *n_bufs = 1;
  n->pending_snapshot = {true, n->db_applied, id, false};
  return 0;
}

// A libuv worker thread.
int Node::Impl::FsmSnapshotAsync(raft_fsm* fsm, raft_buffer** /*bufs*/, unsigned* /*n_bufs*/) {
  auto* n = static_cast<Impl*>(fsm->data);
  PendingSnapshot& p = n->pending_snapshot;
  Status s = n->MakeCheckpoint(p.applied, p.id);
  if (!s.ok()) {
    spdlog::error("node {}: snapshot failed: {}", n->opt.id, s.ToString());
    return RAFT_IOERR;
  }
  n->CollectCheckpoints(p.id);
  p.made = true;
  return 0;
}

// Loop thread, once libraft is done with the snapshot (stored or not). With
// a finalize callback the buffers are ours to free.
int Node::Impl::FsmSnapshotFinalize(raft_fsm* fsm, raft_buffer* bufs[], unsigned* n_bufs) {
  auto* n = static_cast<Impl*>(fsm->data);
  if (*bufs != nullptr) {
    for (unsigned i = 0; i < *n_bufs; ++i) raft_free((*bufs)[i].base);
    raft_free(*bufs);
  }
  *bufs = nullptr;
  *n_bufs = 0;
  if (n->pending_snapshot.made) {
    n->snapshots_taken++;
    spdlog::info("node {}: snapshot at index {} (checkpoint {})", n->opt.id, n->pending_snapshot.applied,
                 n->pending_snapshot.id);
  }
  n->pending_snapshot = {};
  if (n->close_after_snapshot) {
    // Not from inside libraft's callback: on the next turn of the loop.
    uv_timer_stop(&n->timer);
    uv_timer_start(
        &n->timer, [](uv_timer_t* t) { static_cast<Impl*>(t->data)->CloseRaft(); }, 0, 0);
  }
  return 0;
}

// Loop thread: a snapshot installed from the leader, or this node's own at
// startup. Only starts the install (StartInstall): fetching a large
// checkpoint here would keep this node from voting and from answering
// heartbeats (libraft refuses votes while its own snapshot_put is pending,
// which is why the fetch is not done before that either), and with one node
// down it would hold up the election of a new leader.
int Node::Impl::FsmRestore(raft_fsm* fsm, raft_buffer* buf) {
  auto* n = static_cast<Impl*>(fsm->data);
  Descriptor d;
  if (!ParseDescriptor(*buf, &d)) {
    spdlog::error("node {}: snapshot descriptor not understood", n->opt.id);
    return RAFT_MALFORMED;
  }
  if (d.applied > n->db_applied && (!n->installing || d.applied > n->install_target.applied)) {
    n->StartInstall(d);
  }
  // On success the FSM owns the buffer.
  raft_free(buf->base);
  return 0;
}

// ---- requests (loop thread) --------------------------------------------------

void Node::Impl::ProposeBatch(std::vector<Proposal>& batch, size_t first, size_t last) {
  size_t len = kEntryHeader;
  for (size_t i = first; i < last; ++i) len += 4 + batch[i].command.size();
  auto* e = new Entry{};
  e->node = this;
  e->seq = next_entry++;
  e->req.data = e;
  const size_t size = Pad8(len);
  char* p = static_cast<char*>(raft_malloc(size));
  if (p == nullptr) {
    for (size_t i = first; i < last; ++i) batch[i].done(Unavailable("out of memory", false));
    delete e;
    return;
  }
  PutU32(p, kEntryVersion);
  PutU32(p + 4, static_cast<uint32_t>(len));
  PutU64(p + 8, nonce);
  PutU64(p + 16, e->seq);
  PutU32(p + 24, static_cast<uint32_t>(last - first));
  size_t pos = kEntryHeader;
  for (size_t i = first; i < last; ++i) {
    PutU32(p + pos, static_cast<uint32_t>(batch[i].command.size()));
    std::memcpy(p + pos + 4, batch[i].command.data(), batch[i].command.size());
    pos += 4 + batch[i].command.size();
    e->waiting.push_back(std::move(batch[i].done));
  }
  std::memset(p + len, 0, size - len);
  raft_buffer buf{p, size};
  entries[e->seq] = e;
  int rv = raft_apply(&raft, &e->req, &buf, 1, OnApplied);
  if (rv != 0) {
    raft_free(p);
    entries.erase(e->seq);
    ReplicaAnswer a = FromRaftError(rv, false);
    for (Answer& w : e->waiting) w(a);
    delete e;
    return;
  }
  entries_proposed++;
  commands_proposed += last - first;
}

void Node::Impl::OnApplied(struct raft_apply* req, int status, void* /*result*/) {
  auto* e = static_cast<Entry*>(req->data);
  e->committed = true;
  // Applied once the installed store is in (OnInstallDone).
  if (status == 0 && e->deferred && !e->applied) return;
  FinishEntry(e, status);
}

// Answers an entry's requests and frees it (libraft is done with it).
void Node::Impl::FinishEntry(Entry* e, int status) {
  Impl* n = e->node;
  n->entries.erase(e->seq);
  if (status == 0 && e->applied && e->answers.size() == e->waiting.size()) {
    if (e->applied_at != e->req.index) {
      spdlog::error("node {}: entry applied at {} but proposed at {}", n->opt.id, e->applied_at, e->req.index);
    }
    for (size_t i = 0; i < e->waiting.size(); ++i) e->waiting[i](std::move(e->answers[i]));
  } else {
    ReplicaAnswer a = status == 0 ? Unavailable("the entry was not applied here", true)
                                  : n->FromRaftError(status, true);
    for (Answer& w : e->waiting) w(a);
  }
  delete e;
}

void Node::Impl::StartBarrier() {
  if (barrier_in_flight != nullptr || barrier_waiting.empty() || closing) return;
  if (raft_state(&raft) != RAFT_LEADER) {
    ReplicaAnswer a = NotLeader();
    for (Answer& w : barrier_waiting) w(a);
    barrier_waiting.clear();
    return;
  }
  // Reads that arrived while a barrier was in flight wait for the next one:
  // the earlier barrier may have been decided before they started.
  auto* b = new Barrier{};
  b->node = this;
  b->req.data = b;
  b->waiting.swap(barrier_waiting);
  int rv = raft_barrier(&raft, &b->req, OnBarrier);
  if (rv != 0) {
    ReplicaAnswer a = FromRaftError(rv, false);
    for (Answer& w : b->waiting) w(a);
    delete b;
    return;
  }
  barrier_in_flight = b;
}

void Node::Impl::OnBarrier(struct raft_barrier* req, int status) {
  auto* b = static_cast<Barrier*>(req->data);
  Impl* n = b->node;
  n->barrier_in_flight = nullptr;
  if (status == 0 && n->installing) {
    // Confirmed, but the store does not hold what was committed yet.
    for (Answer& w : b->waiting) n->deferred_reads.push_back(std::move(w));
    delete b;
    n->StartBarrier();
    return;
  }
  ReplicaAnswer a = status == 0                 ? ReplicaAnswer::Ok("null")
                    : status == RAFT_NOTLEADER ? n->NotLeader()
                                               : Unavailable(std::string("the read could not be confirmed by a majority (") +
                                                                 raft_strerror(status) + "); retry",
                                                             false);
  for (Answer& w : b->waiting) w(a);
  delete b;
  n->StartBarrier();
}

void Node::Impl::OnTransfer(struct raft_transfer* req) {
  auto* t = static_cast<Transfer*>(req->data);
  Impl* n = t->node;
  n->transfer_in_flight = nullptr;
  raft_id id = 0;
  const char* address = nullptr;
  raft_leader(&n->raft, &id, &address);
  if (id == 0 || id == n->opt.id) {
    t->done(Unavailable("leadership transfer did not complete", false));
  } else {
    t->done(ReplicaAnswer::Ok(json{{"leader_id", id}, {"leader", n->ClientAddress(id)}}.dump()));
  }
  delete t;
}

void Node::Impl::OnAsync(uv_async_t* handle) {
  auto* n = static_cast<Impl*>(handle->data);
  std::deque<Proposal> props;
  std::vector<Answer> reads;
  std::deque<TransferRequest> transfers;
  bool stopping;
  {
    std::lock_guard lock(n->mu);
    props.swap(n->proposals);
    reads.swap(n->reads);
    transfers.swap(n->transfers);
    stopping = n->stopping;
  }
  if (n->closing) return;
  if (stopping) {
    ReplicaAnswer a = Unavailable("the node is shutting down", false);
    for (Proposal& p : props) p.done(a);
    for (Answer& r : reads) r(a);
    for (TransferRequest& t : transfers) t.done(a);
    for (Answer& r : n->barrier_waiting) r(a);
    n->barrier_waiting.clear();
    n->Shutdown();
    return;
  }
  const bool leader = raft_state(&n->raft) == RAFT_LEADER;
  if (!leader) {
    ReplicaAnswer a = n->NotLeader();
    for (Proposal& p : props) p.done(a);
    for (Answer& r : reads) r(a);
    for (TransferRequest& t : transfers) t.done(a);
    return;
  }
  // Everything queued since the last wakeup shares log entries (one fsync
  // and one round trip per entry, not per request).
  std::vector<Proposal> batch(std::make_move_iterator(props.begin()), std::make_move_iterator(props.end()));
  size_t first = 0, bytes = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (i > first && (bytes + batch[i].command.size() > n->opt.max_entry_bytes || i - first >= 10000)) {
      n->ProposeBatch(batch, first, i);
      first = i;
      bytes = 0;
    }
    bytes += batch[i].command.size() + 4;
  }
  if (first < batch.size()) n->ProposeBatch(batch, first, batch.size());
  for (Answer& r : reads) n->barrier_waiting.push_back(std::move(r));
  n->StartBarrier();
  for (TransferRequest& t : transfers) {
    if (n->transfer_in_flight != nullptr) {
      t.done(Unavailable("a leadership transfer is already in progress", false));
      continue;
    }
    auto* x = new Transfer{};
    x->node = n;
    x->req.data = x;
    x->done = std::move(t.done);
    int rv = raft_transfer(&n->raft, &x->req, t.to, OnTransfer);
    if (rv != 0) {
      x->done(rv == RAFT_BADID || rv == RAFT_NOTFOUND
                  ? ReplicaAnswer::Error("bad_request", std::string("cannot transfer to that node: ") + raft_strerror(rv))
                  : n->FromRaftError(rv, false));
      delete x;
      continue;
    }
    n->transfer_in_flight = x;
  }
}

void Node::Impl::RefreshStats() {
  Snapshot s;
  s.state = raft_state(&raft);
  s.term = raft.current_term;
  raft_id id = 0;
  const char* address = nullptr;
  raft_leader(&raft, &id, &address);
  s.leader = id;
  s.commit = raft.commit_index;
  s.applied = raft.last_applied;
  s.last_index = raft_last_index(&raft);
  s.store_applied = db_applied;
  if (s.state == RAFT_LEADER) {
    for (unsigned i = 0; i < raft.configuration.n; ++i) {
      const raft_id peer = raft.configuration.servers[i].id;
      s.match.emplace_back(peer, peer == opt.id ? s.last_index : raft.leader_state.progress[i].match_index);
    }
  }
  if (id != last_leader) {
    if (id != 0) {
      leader_changes++;
      spdlog::info("node {}: leader is now node {} (term {})", opt.id, id, s.term);
    }
    last_leader = id;
  }
  std::lock_guard lock(stats_mu);
  stats = std::move(s);
}

// libraft's TCP transport leaves Nagle's algorithm on. With several
// AppendEntries in flight (many clients), a small message then waits for the
// ACK of the previous one, which the peer delays by up to 40 ms: p99 write
// latency was ~45 ms and 8 clients managed fewer writes than one. libraft
// gives no hook for its sockets, so every TCP handle on the loop gets
// TCP_NODELAY here (new connections within one timer tick; accepted ones
// also inherit it from the listener).
void Node::Impl::SetNoDelay() {
  uv_walk(
      &loop,
      [](uv_handle_t* h, void*) {
        if (h->type == UV_TCP && !uv_is_closing(h)) uv_tcp_nodelay(reinterpret_cast<uv_tcp_t*>(h), 1);
      },
      nullptr);
}

void Node::Impl::OnTimer(uv_timer_t* handle) {
  auto* n = static_cast<Impl*>(handle->data);
  n->SetNoDelay();
  n->RefreshStats();
  n->HandOffWhileInstalling();
}

// A node elected while its snapshot install is under way can answer nothing
// until its store is in: it hands leadership to the most up-to-date voter
// (libraft picks one). It cannot simply stay out of elections: slowing its
// election timer was tried, and since a libraft follower refuses votes while
// it still believes in a leader, that held up the election of the others.
void Node::Impl::HandOffWhileInstalling() {
  if (!installing || closing || keep_leadership_while_installing || transfer_in_flight != nullptr ||
      raft_state(&raft) != RAFT_LEADER) {
    return;
  }
  auto* x = new Transfer{};
  x->node = this;
  x->req.data = x;
  x->done = [](ReplicaAnswer) {};
  int rv = raft_transfer(&raft, &x->req, 0, OnTransfer);
  if (rv != 0) {
    delete x;
    return;
  }
  transfer_in_flight = x;
  spdlog::info("node {}: leader while installing a snapshot; handing leadership to a peer", opt.id);
}

void Node::Impl::Shutdown() {
  closing = true;
  // A snapshot's worker may still be making its checkpoint, and libraft
  // goes on with it (storing it) when that returns: close only after
  // FsmSnapshotFinalize.
  if (pending_snapshot.active) {
    close_after_snapshot = true;
    return;
  }
  CloseRaft();
}

void Node::Impl::CloseRaft() {
  close_after_snapshot = false;
  uv_timer_stop(&timer);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  // libraft fails its pending requests (their callbacks run) as it closes.
  raft_close(&raft, OnRaftClosed);
}

void Node::Impl::OnRaftClosed(struct raft* r) {
  auto* n = static_cast<Impl*>(r->data);
  raft_uv_close(&n->io);
  raft_uv_tcp_close(&n->transport);
  uv_close(reinterpret_cast<uv_handle_t*>(&n->async), nullptr);
  {
    std::lock_guard lock(n->install_mu);
    n->install_async_open = false;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&n->install_async), nullptr);
  // A fetch in progress stops at its next step (Run joins it).
  if (n->install_cancel) n->install_cancel->store(true);
}

void Node::Impl::Run(std::promise<Status>* started) {
  auto fail = [&](const std::string& what, int rv) {
    started->set_value(Status::IOError(what + ": " + (rv != 0 ? raft_strerror(rv) : "") + " " + raft.errmsg));
  };
  uv_loop_init(&loop);
  int rv = raft_uv_tcp_init(&transport, &loop);
  if (rv != 0) return fail("raft_uv_tcp_init", rv);
  rv = raft_uv_init(&io, &loop, raft_dir.c_str(), &transport);
  if (rv != 0) return fail("raft_uv_init " + raft_dir, rv);
  raft_uv_set_connect_retry_delay(&io, opt.connect_retry_ms);
  if (io.version < 2 || io.async_work == nullptr) {
    tls_loop = &loop;
    io.version = 2;
    io.async_work = IoAsyncWork;
  }
  raft_uv_set_snapshot_compression(&io, false);  // the descriptor is a few bytes
  // Version 3: snapshots are made off the loop thread (FsmSnapshotAsync).
  fsm.version = 3;
  fsm.data = this;
  fsm.apply = FsmApply;
  fsm.snapshot = FsmSnapshot;
  fsm.restore = FsmRestore;
  fsm.snapshot_finalize = FsmSnapshotFinalize;
  fsm.snapshot_async = FsmSnapshotAsync;
  rv = raft_init(&raft, &io, &fsm, opt.id, opt.peers[opt.id - 1].c_str());
  if (rv != 0) return fail("raft_init", rv);
  raft.data = this;
  raft_set_election_timeout(&raft, opt.election_timeout_ms);
  raft_set_heartbeat_timeout(&raft, opt.heartbeat_timeout_ms);
  raft_set_install_snapshot_timeout(&raft, opt.install_snapshot_timeout_ms);
  raft_set_snapshot_threshold(&raft, opt.snapshot_threshold);
  raft_set_snapshot_trailing(&raft, opt.snapshot_trailing);
  // A node that comes back (or that was busy installing a snapshot) asks
  // before it campaigns, so it cannot depose a healthy leader.
  raft_set_pre_vote(&raft, true);

  raft_configuration conf;
  raft_configuration_init(&conf);
  for (size_t i = 0; i < opt.peers.size(); ++i) {
    raft_configuration_add(&conf, i + 1, opt.peers[i].c_str(), RAFT_VOTER);
  }
  rv = raft_bootstrap(&raft, &conf);
  raft_configuration_close(&conf);
  if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) return fail("raft_bootstrap", rv);
  // Before raft_start: restoring this node's snapshot may start an install.
  uv_async_init(&loop, &install_async, OnInstallDone);
  install_async.data = this;
  {
    std::lock_guard lock(install_mu);
    install_async_open = true;
  }
  rv = raft_start(&raft);
  if (rv != 0) {
    StopInstallWorkers();
    return fail("raft_start", rv);
  }

  uv_async_init(&loop, &async, OnAsync);
  async.data = this;
  uv_timer_init(&loop, &timer);
  timer.data = this;
  uv_timer_start(&timer, OnTimer, 0, 50);
  {
    std::lock_guard lock(mu);
    loop_running = true;
  }
  started->set_value(Status::OK());
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  StopInstallWorkers();
  // Nothing of libraft's runs any more: answer whatever it did not.
  ReplicaAnswer a = Unavailable("the node stopped", true);
  for (Answer& w : deferred_reads) w(a);
  deferred_reads.clear();
  for (auto& [seq, e] : entries) {
    for (Answer& w : e->waiting) w(a);
    delete e;
  }
  entries.clear();
  if (barrier_in_flight != nullptr) {
    for (Answer& w : barrier_in_flight->waiting) w(a);
    delete barrier_in_flight;
    barrier_in_flight = nullptr;
  }
  if (transfer_in_flight != nullptr) {
    transfer_in_flight->done(a);
    delete transfer_in_flight;
    transfer_in_flight = nullptr;
  }
}

Status Node::Impl::Start() {
  if (opt.id == 0 || opt.id > opt.peers.size()) {
    return Status::InvalidArgument("node id must be between 1 and the number of peers");
  }
  if (!opt.peer_clients.empty() && opt.peer_clients.size() != opt.peers.size()) {
    return Status::InvalidArgument("give one client address per peer");
  }
  if (!opt.peer_transfers.empty() && opt.peer_transfers.size() != opt.peers.size()) {
    return Status::InvalidArgument("give one transfer address per peer");
  }
  raft_dir = opt.data_dir + "/raft";
  ckpt_dir = opt.data_dir + "/checkpoints";
  if (const char* delay = std::getenv("KVSTORE_TEST_SNAPSHOT_DELAY_MS")) {
    test_snapshot_delay_ms = static_cast<unsigned>(std::strtoul(delay, nullptr, 10));
  }
  if (const char* delay = std::getenv("KVSTORE_TEST_INSTALL_DELAY_MS")) {
    test_install_delay_ms = static_cast<unsigned>(std::strtoul(delay, nullptr, 10));
  }
  keep_leadership_while_installing = std::getenv("KVSTORE_TEST_INSTALLING_KEEPS_LEADERSHIP") != nullptr;
  std::random_device rd;
  nonce = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(::getpid());
  Status s = OpenStore();
  if (!s.ok()) return s;
  const std::string me = TransferAddress(opt.id);
  transfer_server = std::make_unique<CheckpointServer>(ckpt_dir);
  if (const char* n = std::getenv("KVSTORE_TEST_TRANSFER_FAIL_LISTS")) transfer_server->FailNextLists(std::atoi(n));
  transfer_server->SetNewestProvider([this](const std::string& min_id) { return NewestCheckpoint(min_id); });
  s = transfer_server->Start(RaftHost(me), static_cast<uint16_t>(std::atoi(me.substr(me.rfind(':') + 1).c_str())));
  if (!s.ok()) return s;
  std::promise<Status> started;
  std::future<Status> result = started.get_future();
  thread = std::thread([this, &started] { Run(&started); });
  s = result.get();
  if (!s.ok()) {
    thread.join();
    transfer_server->Stop();
  }
  return s;
}

// ---- Node ---------------------------------------------------------------------

Node::Node(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Status Node::Open(NodeOptions options, std::unique_ptr<Node>* node) {
  auto impl = std::make_unique<Impl>();
  impl->opt = std::move(options);
  Status s = impl->Start();
  if (!s.ok()) return s;
  node->reset(new Node(std::move(impl)));
  return Status::OK();
}

Node::~Node() { Stop(); }

DB* Node::db() { return impl_->db.get(); }

void Node::Stop() {
  Impl& n = *impl_;
  {
    std::lock_guard lock(n.mu);
    if (n.stopping) {
      // Already stopped (or stopping on another thread, which joins).
    } else {
      n.stopping = true;
      if (n.loop_running) uv_async_send(&n.async);
    }
  }
  if (n.thread.joinable() && n.thread.get_id() != std::this_thread::get_id()) n.thread.join();
  if (n.transfer_server) n.transfer_server->Stop();
}

void Node::Propose(std::string command, Answer done) {
  Impl& n = *impl_;
  {
    std::lock_guard lock(n.mu);
    if (!n.stopping) {
      n.proposals.push_back({std::move(command), std::move(done)});
      // Under the lock: the loop closes the async handle only after it saw
      // stopping, which is set under this lock too.
      uv_async_send(&n.async);
      return;
    }
  }
  done(Impl::Unavailable("the node is shutting down", false));
}

void Node::ReadBarrier(Answer done) {
  Impl& n = *impl_;
  {
    std::lock_guard lock(n.mu);
    if (!n.stopping) {
      n.reads.push_back(std::move(done));
      uv_async_send(&n.async);
      return;
    }
  }
  done(Impl::Unavailable("the node is shutting down", false));
}

void Node::TransferLeadership(uint64_t to, Answer done) {
  Impl& n = *impl_;
  {
    std::lock_guard lock(n.mu);
    if (!n.stopping) {
      n.transfers.push_back({to, std::move(done)});
      uv_async_send(&n.async);
      return;
    }
  }
  done(Impl::Unavailable("the node is shutting down", false));
}

std::string Node::StatsJson() {
  Impl& n = *impl_;
  Impl::Snapshot s;
  {
    std::lock_guard lock(n.stats_mu);
    s = n.stats;
  }
  json peers = json::array();
  for (uint64_t id = 1; id <= n.opt.peers.size(); ++id) {
    json p = {{"id", id}, {"raft", n.opt.peers[id - 1]}, {"client", n.ClientAddress(id)}};
    for (const auto& [peer, match] : s.match) {
      if (peer == id) p["match_index"] = match;
    }
    peers.push_back(std::move(p));
  }
  json r = {
      {"node_id", n.opt.id},
      {"role", RoleName(s.state)},
      {"term", s.term},
      {"leader_id", s.leader},
      {"leader", n.ClientAddress(s.leader)},
      {"commit_index", s.commit},
      {"applied_index", s.applied},
      {"last_log_index", s.last_index},
      {"store_applied_index", s.store_applied},
      {"peers", std::move(peers)},
      {"snapshots_taken", n.snapshots_taken.load()},
      {"snapshots_installed", n.snapshots_installed.load()},
      {"log_entries_proposed", n.entries_proposed.load()},
      {"commands_proposed", n.commands_proposed.load()},
      {"leader_changes", n.leader_changes.load()},
      {"snapshot_installing", n.installing_now.load()},
      {"snapshot_install_attempts_failed", n.install_attempts_failed.load()},
  };
  return r.dump();
}

std::string Node::PrometheusText() {
  Impl& n = *impl_;
  Impl::Snapshot s;
  {
    std::lock_guard lock(n.stats_mu);
    s = n.stats;
  }
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, uint64_t value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " +
           std::to_string(value) + "\n";
  };
  metric("kvstore_raft_is_leader", "gauge", "1 on the leader.", s.state == RAFT_LEADER ? 1 : 0);
  metric("kvstore_raft_leader_known", "gauge", "1 while this node knows a leader.", s.leader != 0 ? 1 : 0);
  metric("kvstore_raft_leader_id", "gauge", "The leader's node id (0: none known).", s.leader);
  metric("kvstore_raft_term", "gauge", "The current Raft term.", s.term);
  metric("kvstore_raft_commit_index", "gauge", "Highest log index known committed.", s.commit);
  metric("kvstore_raft_applied_index", "gauge", "Highest log index applied here.", s.applied);
  metric("kvstore_raft_last_log_index", "gauge", "Highest log index stored here.", s.last_index);
  metric("kvstore_raft_snapshots_taken_total", "counter", "Snapshots taken.", n.snapshots_taken.load());
  metric("kvstore_raft_snapshots_installed_total", "counter", "Snapshots installed from peers.",
         n.snapshots_installed.load());
  metric("kvstore_raft_leader_changes_total", "counter", "Leaders seen.", n.leader_changes.load());
  metric("kvstore_raft_snapshot_installing", "gauge", "1 while a snapshot's checkpoint is being installed.",
         n.installing_now.load() ? 1 : 0);
  metric("kvstore_raft_snapshot_install_attempts_failed_total", "counter",
         "Failed attempts to fetch or open a snapshot's checkpoint (each is retried).",
         n.install_attempts_failed.load());
  out += "# HELP kvstore_raft_peer_match_index Highest log index each peer has (on the leader).\n"
         "# TYPE kvstore_raft_peer_match_index gauge\n";
  for (const auto& [peer, match] : s.match) {
    out += "kvstore_raft_peer_match_index{peer=\"" + std::to_string(peer) + "\"} " + std::to_string(match) + "\n";
  }
  return out;
}

bool Node::Healthy(std::string* why) {
  if (impl_->installing_now) {
    // It votes and follows, but its store is behind its log until then.
    *why = "snapshot_installing: fetching the checkpoint behind a snapshot";
    return false;
  }
  std::lock_guard lock(impl_->stats_mu);
  if (impl_->stats.leader == 0) {
    *why = "no_leader: this node knows no leader";
    return false;
  }
  return true;
}

}  // namespace kvstore::cluster
