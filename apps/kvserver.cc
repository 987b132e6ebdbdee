// kvserver: serves a kvstore data directory over NDJSON/TCP (docs/protocol.md).
// Thin: flags and environment in, net::Server out.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "kvstore/db.h"
#include "net/server.h"

int main(int argc, char** argv) {
  kvstore::net::ServerOptions options;
  std::string data_dir = "data";
  std::string token_file;
  std::string log_level = "info";
  kvstore::Options db_options;
  // The server answers the three searches, so its store indexes by default.
  db_options.search.enabled = true;
  bool no_search = false, no_semantic = false;

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
  app.add_option("--threads", options.threads, "server threads; 0 = one per core")
      ->envname("KVSTORE_THREADS")->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->envname("KVSTORE_LOG_LEVEL")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (no_search) db_options.search.enabled = false;
  if (no_semantic) db_options.search.semantic = false;

  // Logs go to stderr; stdout carries only the "listening" line that
  // scripts and tests read.
  spdlog::set_default_logger(spdlog::stderr_color_mt("kvserver"));
  spdlog::set_level(spdlog::level::from_str(log_level));

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
  kvstore::Status s = kvstore::DB::Open(db_options, data_dir, &db);
  if (!s.ok()) {
    spdlog::error("cannot open {}: {}", data_dir, s.ToString());
    return 1;
  }
  {
    kvstore::net::Server server(db.get(), options);
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
  }
  db.reset();  // waits for writes in flight, then closes the store
  spdlog::info("stopped");
  return 0;
}
