#include "bench/server_bench.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/histogram.h"
#include "net/client.h"

namespace kvbench {

namespace {

using Clock = std::chrono::steady_clock;

std::string Key(uint64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "key%016llu", static_cast<unsigned long long>(i));
  return buf;
}

// A kvserver child on a free port in a temporary directory.
class Spawned {
 public:
  bool Start(const std::string& binary) {
    char tmpl[] = "/tmp/kvbench-server-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return false;
    dir_ = tmpl;
    int out[2];
    if (pipe(out) != 0) return false;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      close(out[0]);
      close(out[1]);
      std::string data = dir_ + "/data";
      execl(binary.c_str(), binary.c_str(), "--host", "127.0.0.1", "--port", "0", "--data-dir",
            data.c_str(), "--log-level", "warn", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    std::string line;
    char c;
    while (read(out[0], &c, 1) == 1 && c != '\n') line += c;
    close(out[0]);
    auto colon = line.rfind(':');
    if (line.rfind("listening ", 0) != 0 || colon == std::string::npos) return false;
    port_ = std::stoi(line.substr(colon + 1));
    return true;
  }
  ~Spawned() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  int port() const { return port_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string dir_;
};

struct Result {
  uint64_t ops = 0;       // keys written or read
  uint64_t requests = 0;  // protocol requests
  uint64_t errors = 0;
  uint64_t found = 0;
  double seconds = 0;
  Histogram latency;  // per request, ns (a pipelined batch counts for each of its requests)
};

// The requests for ops [begin, end) of a workload.
void Batch(const std::string& workload, uint64_t begin, uint64_t end,
           const std::string& value_json, std::vector<std::string>* out, uint64_t* ops) {
  out->clear();
  *ops = 0;
  if (workload == "bulk_set") {
    std::string req = R"({"op":"bulk_set","items":[)";
    for (uint64_t i = begin; i < end; ++i) {
      if (i > begin) req += ',';
      req += "[\"" + Key(i) + "\"," + value_json + "]";
    }
    req += "]}";
    out->push_back(std::move(req));
    *ops = end - begin;
    return;
  }
  for (uint64_t i = begin; i < end; ++i) {
    bool set = workload == "set" || (workload == "mixed" && i % 2 == 0);
    out->push_back(set ? R"({"op":"set","key":")" + Key(i) + R"(","value":)" + value_json + "}"
                       : R"({"op":"get","key":")" + Key(i) + "\"}");
    ++*ops;
  }
}

bool RunWorkload(const std::string& workload, const ServerBenchOptions& o, int port, Result* result) {
  const std::string value_json = "\"" + std::string(o.value_size, 'v') + "\"";
  const uint64_t per_client = o.num / static_cast<uint64_t>(o.clients);
  const uint64_t step = workload == "bulk_set" ? o.bulk_size : static_cast<uint64_t>(o.pipeline);
  std::vector<Result> per(static_cast<size_t>(o.clients));
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  auto start = Clock::now();
  for (int c = 0; c < o.clients; ++c) {
    threads.emplace_back([&, c] {
      kvstore::net::ClientOptions co;
      co.addresses = {o.host + ":" + std::to_string(port)};
      kvstore::net::Client client(co);
      Result& r = per[static_cast<size_t>(c)];
      std::vector<std::string> reqs, resps;
      const uint64_t first = per_client * static_cast<uint64_t>(c);
      for (uint64_t i = first; i < first + per_client && !failed; i += step) {
        uint64_t ops;
        Batch(workload, i, std::min(i + step, first + per_client), value_json, &reqs, &ops);
        auto t0 = Clock::now();
        kvstore::Status s = client.CallMany(reqs, &resps);
        auto ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
        if (!s.ok()) {
          std::fprintf(stderr, "kvbench server: %s\n", s.ToString().c_str());
          failed = true;
          return;
        }
        for (const std::string& resp : resps) {
          r.latency.Record(ns);
          ++r.requests;
          if (resp.find("\"ok\":true") != std::string::npos) {
            ++r.found;
          } else if (resp.find("not_found") == std::string::npos) {
            ++r.errors;
          }
        }
        r.ops += ops;
      }
    });
  }
  for (auto& t : threads) t.join();
  result->seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (const Result& r : per) {
    result->ops += r.ops;
    result->requests += r.requests;
    result->errors += r.errors;
    result->found += r.found;
    result->latency.Merge(r.latency);
  }
  return !failed;
}

}  // namespace

int RunServerBench(const ServerBenchOptions& o) {
  Spawned spawned;
  int port = o.port;
  if (o.spawn) {
    if (!spawned.Start(o.kvserver)) {
      std::fprintf(stderr, "kvbench server: could not start %s\n", o.kvserver.c_str());
      return 1;
    }
    port = spawned.port();
  }
  int code = 0;
  for (const std::string& w : o.workloads) {
    Result r;
    if (!RunWorkload(w, o, port, &r)) code = 1;
    const double ops_per_sec = r.seconds > 0 ? static_cast<double>(r.ops) / r.seconds : 0;
    if (o.json) {
      std::printf(
          "{\"engine\":\"kvserver\",\"workload\":\"%s\",\"clients\":%d,\"pipeline\":%d,"
          "\"value_size\":%zu,\"ops\":%llu,\"requests\":%llu,\"errors\":%llu,\"seconds\":%.6f,"
          "\"ops_per_sec\":%.1f,\"p50_us\":%.3f,\"p99_us\":%.3f}\n",
          w.c_str(), o.clients, o.pipeline, o.value_size, static_cast<unsigned long long>(r.ops),
          static_cast<unsigned long long>(r.requests), static_cast<unsigned long long>(r.errors),
          r.seconds, ops_per_sec, r.latency.Percentile(0.5) / 1000, r.latency.Percentile(0.99) / 1000);
    } else {
      std::printf("%-9s clients %3d pipeline %3d: %10llu ops in %7.3f s = %10.1f ops/s, p50 %8.1f us, p99 %8.1f us, errors %llu\n",
                  w.c_str(), o.clients, o.pipeline, static_cast<unsigned long long>(r.ops), r.seconds,
                  ops_per_sec, r.latency.Percentile(0.5) / 1000, r.latency.Percentile(0.99) / 1000,
                  static_cast<unsigned long long>(r.errors));
    }
    std::fflush(stdout);
    if (r.errors > 0) code = 1;
  }
  return code;
}

void AddServerCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<ServerBenchOptions>();
  CLI::App* cmd = app.add_subcommand("server", "load a kvserver over TCP, as redis-benchmark loads Redis");
  cmd->add_option("--host", o->host)->capture_default_str();
  cmd->add_option("--port", o->port)->capture_default_str();
  cmd->add_option("--workload", o->workloads, "set, get, mixed, bulk_set; comma-separated, run in order")
      ->delimiter(',')
      ->check(CLI::IsMember({"set", "get", "mixed", "bulk_set"}))
      ->capture_default_str();
  cmd->add_option("--clients", o->clients, "connections, one thread each")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--pipeline", o->pipeline, "requests in flight per connection")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--num", o->num, "operations in total (bulk_set: items)")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--value-size", o->value_size, "value bytes (a JSON string)")->capture_default_str();
  cmd->add_option("--bulk-size", o->bulk_size, "items per bulk_set request")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_flag("--json", o->json, "one JSON object per workload");
  cmd->add_flag("--spawn", o->spawn, "start a kvserver on a free port in a temporary directory");
#ifdef KVBENCH_KVSERVER_PATH
  o->kvserver = KVBENCH_KVSERVER_PATH;
#endif
  cmd->add_option("--kvserver", o->kvserver, "the kvserver binary for --spawn")->capture_default_str();
  cmd->callback([o, exit_code] { *exit_code = RunServerBench(*o); });
}

}  // namespace kvbench
