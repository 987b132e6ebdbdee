// kvserver: serves a kvstore data directory over NDJSON/TCP (docs/protocol.md).
// Thin: flags and environment in, net::Server out.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cluster/node.h"
#include "kvstore/db.h"
#include "kvstore/embedder.h"
#include "net/server.h"

namespace {

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  kvstore::net::ServerOptions options;
  std::string data_dir = "data";
  std::string token_file;
  std::string log_level = "info";
  kvstore::Options db_options;
  // The server answers the three searches, so its store indexes by default.
  db_options.search.enabled = true;
  // Keys from 0xff on are the server's own (the cluster's applied index).
  db_options.search.excluded_prefixes = {"\xff"};
  bool no_search = false, no_semantic = false;
  std::string embedder_kind = "hashing";
  kvstore::HttpEmbedderOptions http_embedder;
  bool cluster = false;
  kvstore::cluster::NodeOptions node_options;
  std::string peers, peer_clients, peer_transfers;

  CLI::App app{"kvserver: the kvstore server (NDJSON over TCP; see docs/protocol.md)"};
  app.set_config("--config", "", "read options from this TOML/INI file");
  app.add_option("--host", options.host, "address to listen on")->envname("KVSTORE_HOST")->capture_default_str();
  app.add_option("--port", options.port, "port to listen on; 0 picks a free one")
      ->envname("KVSTORE_PORT")->capture_default_str();
  app.add_option("--data-dir", data_dir, "the store's directory (created if missing)")
      ->envname("KVSTORE_DATA_DIR")->capture_default_str();
  app.add_option("--auth-token-file", token_file,
                 "require {\"op\":\"auth\",\"token\":...} matching this file's first line")
      ->envname("KVSTORE_AUTH_TOKEN_FILE")->check(CLI::ExistingFile);
  app.add_option("--max-connections", options.max_connections, "connections beyond this are refused")
      ->envname("KVSTORE_MAX_CONNECTIONS")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--idle-timeout-ms", options.idle_timeout_ms, "close idle connections after this; 0 never")
      ->envname("KVSTORE_IDLE_TIMEOUT_MS")->capture_default_str();
  app.add_option("--max-line-bytes", options.max_line_bytes, "longest request line")
      ->envname("KVSTORE_MAX_LINE_BYTES")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--drain-timeout-ms", options.drain_timeout_ms,
                 "on SIGTERM/SIGINT, abort connections still busy after this")
      ->envname("KVSTORE_DRAIN_TIMEOUT_MS")->capture_default_str();
  app.add_option("--metrics-port", options.metrics_port,
                 "HTTP port for GET /metrics (Prometheus) and GET /health; 0 picks a free one")
      ->envname("KVSTORE_METRICS_PORT");
  app.add_flag("--best-effort-recovery", db_options.best_effort_recovery,
               "on a corrupt WAL, keep everything before the first bad record instead of refusing to start");
  app.add_option("--checkpoint-dir", options.handler.checkpoint_dir,
                 "directory the checkpoint op writes into (off when empty)")
      ->envname("KVSTORE_CHECKPOINT_DIR");
  app.add_flag("--no-search", no_search, "keep no search indexes (search ops answer unavailable)")
      ->envname("KVSTORE_NO_SEARCH");
  app.add_option("--index-prefix", db_options.search.prefixes,
                 "index only keys under this prefix (repeatable; default: every key)")
      ->envname("KVSTORE_INDEX_PREFIX");
  app.add_option("--stemmer", db_options.search.stemmer_language,
                 "Snowball stemmer language for full-text search; \"\" for none")
      ->envname("KVSTORE_STEMMER")->capture_default_str();
  app.add_flag("--stop-words", db_options.search.stop_words, "drop common English stop words from full-text indexing")
      ->envname("KVSTORE_STOP_WORDS");
  app.add_flag("--no-semantic", no_semantic, "keep no semantic (vector) index")->envname("KVSTORE_NO_SEMANTIC");
  auto* em = app.add_option_group("embedder", "semantic search: the embedding model (docs/search.md)");
  em->add_option("--embedder", embedder_kind,
                 "hashing (built in, offline), an HTTP service: openai (/v1/embeddings), ollama (/api/embed), "
                 "tei (text-embeddings-inference /embed), or client (every vector comes with its write and query; "
                 "needs --embedder-dimension)")
      ->envname("KVSTORE_EMBEDDER")->capture_default_str()
      ->check(CLI::IsMember({"hashing", "openai", "ollama", "tei", "client"}));
  em->add_option("--embedder-url", http_embedder.url, "the service, http://host:port[/base]")
      ->envname("KVSTORE_EMBEDDER_URL");
  em->add_option("--embedder-model", http_embedder.model, "the model name sent to the service")
      ->envname("KVSTORE_EMBEDDER_MODEL");
  em->add_option("--embedder-dimension", http_embedder.dimension,
                 "vector dimension: required for a service (checked on every answer); hashing defaults to 256")
      ->envname("KVSTORE_EMBEDDER_DIMENSION")->check(CLI::PositiveNumber);
  em->add_option("--embedder-api-key-env", http_embedder.api_key_env,
                 "name of the environment variable holding the API key (sent as a Bearer token)")
      ->envname("KVSTORE_EMBEDDER_API_KEY_ENV");
  em->add_option("--embedder-batch", http_embedder.batch_size, "texts per request")
      ->envname("KVSTORE_EMBEDDER_BATCH")->capture_default_str()->check(CLI::PositiveNumber);
  em->add_option("--embedder-timeout-ms", http_embedder.read_timeout_ms, "how long to wait for one answer")
      ->envname("KVSTORE_EMBEDDER_TIMEOUT_MS")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--threads", options.threads, "server threads; 0 = one per core")
      ->envname("KVSTORE_THREADS")->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->envname("KVSTORE_LOG_LEVEL")->capture_default_str();
  auto* cl = app.add_option_group("cluster", "Raft replication (docs/cluster.md)");
  cl->add_flag("--cluster", cluster, "run as a member of a Raft cluster")->envname("KVSTORE_CLUSTER");
  cl->add_option("--node-id", node_options.id, "this node's id: its 1-based position in --peers")
      ->envname("KVSTORE_NODE_ID");
  cl->add_option("--peers", peers, "every member's Raft address, host:port,host:port,... (same on every node)")
      ->envname("KVSTORE_PEERS");
  cl->add_option("--peer-clients", peer_clients,
                 "every member's client address, same order; not_leader answers name them")
      ->envname("KVSTORE_PEER_CLIENTS");
  cl->add_option("--peer-transfers", peer_transfers,
                 "every member's checkpoint transfer address, same order (default: Raft port + 1000)")
      ->envname("KVSTORE_PEER_TRANSFERS");
  cl->add_option("--election-timeout-ms", node_options.election_timeout_ms, "Raft election timeout")
      ->envname("KVSTORE_ELECTION_TIMEOUT_MS")->capture_default_str();
  cl->add_option("--heartbeat-timeout-ms", node_options.heartbeat_timeout_ms, "Raft heartbeat interval")
      ->envname("KVSTORE_HEARTBEAT_TIMEOUT_MS")->capture_default_str();
  cl->add_option("--snapshot-threshold", node_options.snapshot_threshold,
                 "take a snapshot (engine checkpoint) every this many log entries")
      ->envname("KVSTORE_SNAPSHOT_THRESHOLD")->capture_default_str();
  cl->add_option("--snapshot-trailing", node_options.snapshot_trailing,
                 "log entries kept behind a snapshot for lagging followers")
      ->envname("KVSTORE_SNAPSHOT_TRAILING")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (no_search) db_options.search.enabled = false;
  if (no_semantic) db_options.search.semantic = false;
  // A peer that dies mid-send must not take this process with it.
  std::signal(SIGPIPE, SIG_IGN);

  // Logs go to stderr; stdout carries only the "listening" line that
  // scripts and tests read.
  spdlog::set_default_logger(spdlog::stderr_color_mt("kvserver"));
  spdlog::set_level(spdlog::level::from_str(log_level));

  if (db_options.search.enabled && db_options.search.semantic) {
    if (embedder_kind == "hashing") {
      if (http_embedder.dimension > 0) db_options.search.embedder = kvstore::NewHashingEmbedder(http_embedder.dimension);
    } else if (embedder_kind == "client") {
      if (http_embedder.dimension <= 0) {
        spdlog::error("--embedder client needs --embedder-dimension (the dimension of the clients' vectors)");
        return 2;
      }
      db_options.search.embedder = kvstore::NewClientVectorsEmbedder(http_embedder.dimension);
    } else {
      http_embedder.api = embedder_kind == "openai"   ? kvstore::HttpEmbedderApi::kOpenAI
                          : embedder_kind == "ollama" ? kvstore::HttpEmbedderApi::kOllama
                                                      : kvstore::HttpEmbedderApi::kTEI;
      kvstore::Status es = kvstore::NewHttpEmbedder(http_embedder, &db_options.search.embedder);
      if (!es.ok()) {
        spdlog::error("--embedder {}: {}", embedder_kind, es.ToString());
        return 2;
      }
      spdlog::info("semantic search through {} (vectors computed in the background)",
                   db_options.search.embedder->name());
    }
  }

  if (!token_file.empty()) {
    std::ifstream in(token_file);
    std::string token;
    std::getline(in, token);
    while (!token.empty() && (token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) {
      token.pop_back();
    }
    if (token.empty()) {
      spdlog::error("auth token file {} is empty", token_file);
      return 2;
    }
    options.handler.auth_token = std::move(token);
  }

  // The engine creates the store's own directory, not its parents.
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    spdlog::error("cannot create {}: {}", data_dir, ec.message());
    return 1;
  }
  std::unique_ptr<kvstore::DB> db;
  if (!options.handler.checkpoint_dir.empty()) {
    // Made absolute now: the checkpoint op joins names onto it later.
    std::filesystem::create_directories(options.handler.checkpoint_dir, ec);
    if (ec) {
      spdlog::error("cannot create {}: {}", options.handler.checkpoint_dir, ec.message());
      return 1;
    }
    options.handler.checkpoint_dir = std::filesystem::absolute(options.handler.checkpoint_dir).string();
  }
  std::unique_ptr<kvstore::cluster::Node> node;
  kvstore::DB* store = nullptr;
  kvstore::Status s;
  if (cluster) {
    node_options.peers = SplitList(peers);
    node_options.peer_clients = SplitList(peer_clients);
    node_options.peer_transfers = SplitList(peer_transfers);
    node_options.data_dir = data_dir;
    node_options.db_options = db_options;
    if (node_options.peers.empty() || node_options.id == 0) {
      spdlog::error("--cluster needs --node-id and --peers");
      return 2;
    }
    s = kvstore::cluster::Node::Open(node_options, &node);
    if (!s.ok()) {
      spdlog::error("cannot start cluster node {} in {}: {}", node_options.id, data_dir, s.ToString());
      return 1;
    }
    store = node->db();
    options.handler.replication = node.get();
    // The Raft log is what is fsync'd; the handler writes nothing itself.
    options.handler.sync = false;
  } else {
    s = kvstore::DB::Open(db_options, data_dir, &db);
    if (!s.ok()) {
      spdlog::error("cannot open {}: {}", data_dir, s.ToString());
      return 1;
    }
    store = db.get();
  }
  {
    kvstore::net::Server server(store, options);
    s = server.Start();
    if (!s.ok()) {
      spdlog::error("{}", s.ToString());
      return 1;
    }
    std::printf("listening %s:%u\n", options.host.c_str(), static_cast<unsigned>(server.port()));
    if (server.metrics_port() > 0) std::printf("metrics %s:%d\n", options.host.c_str(), server.metrics_port());
    std::fflush(stdout);
    spdlog::info("serving {} on {}:{} (auth {})", data_dir, options.host, server.port(),
                 options.handler.auth_token.empty() ? "off" : "on");
    server.Run();
    // Answers whatever is still queued while the handler that waits for
    // those answers still exists.
    if (node) node->Stop();
  }
  node.reset();
  db.reset();  // waits for writes in flight, then closes the store
  spdlog::info("stopped");
  return 0;
}
