// kvctl: the command-line client, in the manner of redis-cli and etcdctl.
//
//   kvctl [--host H] [--port P] COMMAND ARGS...     one command, then exit
//   kvctl [--host H] [--port P]                     interactive: one command per line
//   kvctl --hosts H:P,H:P,H:P COMMAND ...           a cluster: finds the leader
//
// A VALUE is taken as JSON when it parses as JSON, else as a string, so
// `kvctl set n 42` stores the number and `kvctl set name Alice` the string.
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "kvstore/db.h"
#include "net/client.h"

namespace {

using json = nlohmann::json;

constexpr const char* kHelp = R"(commands:
  ping
  get KEY                      the value, or (nil)
  set KEY VALUE
  del KEY [KEY...]
  mget KEY [KEY...]
  scan [PREFIX] [--limit N]    or: scan --start A [--end B] [--limit N]
  cas KEY EXPECTED NEW         EXPECTED may be --absent
  stats
  find VALUE                   search_by_value
  fulltext QUERY...
  semantic QUERY... [--k N] [--threshold X]
  flush | compact [START [END]] | checkpoint NAME
  transfer-leader [NODE_ID]    cluster: hand leadership to that node (or any)
  raw JSON                     send one request as is
  help | quit

offline (no server; run on the server's machine, with the server stopped):
  repair --data-dir DIR        rebuild a store with a damaged table or manifest
                               (docs/troubleshooting.md); back DIR up first)";

json ParseValue(const std::string& text) {
  json v = json::parse(text, nullptr, false);
  return v.is_discarded() ? json(text) : v;
}

// Splits an interactive line into words; "double" and 'single' quotes group
// words, and a backslash escapes the next character inside double quotes.
std::vector<std::string> SplitWords(const std::string& line) {
  std::vector<std::string> words;
  std::string cur;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quote) {
      if (c == quote) {
        quote = 0;
      } else if (c == '\\' && quote == '"' && i + 1 < line.size()) {
        cur += line[++i];
      } else {
        cur += c;
      }
    } else if (c == '"' || c == '\'') {
      quote = c;
      in_word = true;
    } else if (c == ' ' || c == '\t') {
      if (in_word) words.push_back(cur);
      cur.clear();
      in_word = false;
    } else {
      cur += c;
      in_word = true;
    }
  }
  if (in_word) words.push_back(cur);
  return words;
}

// Takes "--name VALUE" out of words; returns false if absent.
bool TakeFlag(std::vector<std::string>* words, const std::string& name, std::string* value) {
  for (size_t i = 0; i + 1 < words->size(); ++i) {
    if ((*words)[i] == name) {
      *value = (*words)[i + 1];
      words->erase(words->begin() + static_cast<long>(i), words->begin() + static_cast<long>(i) + 2);
      return true;
    }
  }
  return false;
}

std::string Join(const std::vector<std::string>& words, size_t from) {
  std::string out;
  for (size_t i = from; i < words.size(); ++i) out += (i > from ? " " : "") + words[i];
  return out;
}

// Builds the request for a command; false (with *error) on a usage error.
bool BuildRequest(std::vector<std::string> w, json* req, std::string* error) {
  const std::string cmd = w.empty() ? "" : w[0];
  auto need = [&](size_t n, const char* usage) {
    if (w.size() >= n + 1) return true;
    *error = std::string("usage: ") + usage;
    return false;
  };
  if (cmd == "ping" || cmd == "stats" || cmd == "flush" || cmd == "compact") {
    *req = {{"op", cmd}};
    if (cmd == "compact" && w.size() >= 2) (*req)["start"] = w[1];
    if (cmd == "compact" && w.size() >= 3) (*req)["end"] = w[2];
  } else if (cmd == "get") {
    if (!need(1, "get KEY")) return false;
    *req = {{"op", "get"}, {"key", w[1]}};
  } else if (cmd == "set") {
    if (!need(2, "set KEY VALUE")) return false;
    *req = {{"op", "set"}, {"key", w[1]}, {"value", ParseValue(Join(w, 2))}};
  } else if (cmd == "del" || cmd == "delete") {
    if (!need(1, "del KEY [KEY...]")) return false;
    if (w.size() == 2) {
      *req = {{"op", "delete"}, {"key", w[1]}};
    } else {
      json ops = json::array();
      for (size_t i = 1; i < w.size(); ++i) ops.push_back({{"op", "delete"}, {"key", w[i]}});
      *req = {{"op", "txn"}, {"compare", json::array()}, {"success", ops}};
    }
  } else if (cmd == "mget") {
    if (!need(1, "mget KEY [KEY...]")) return false;
    *req = {{"op", "bulk_get"}, {"keys", std::vector<std::string>(w.begin() + 1, w.end())}};
  } else if (cmd == "scan") {
    std::string limit, start, end;
    *req = {{"op", "scan"}};
    if (TakeFlag(&w, "--limit", &limit)) {
      try {
        (*req)["limit"] = std::stoull(limit);
      } catch (...) {
        *error = "--limit wants a number";
        return false;
      }
    }
    if (TakeFlag(&w, "--start", &start)) (*req)["start"] = start;
    if (TakeFlag(&w, "--end", &end)) (*req)["end"] = end;
    if (w.size() > 1) (*req)["prefix"] = w[1];
  } else if (cmd == "cas") {
    if (!need(3, "cas KEY EXPECTED|--absent NEW")) return false;
    *req = {{"op", "cas"}, {"key", w[1]}, {"value", ParseValue(Join(w, 3))}};
    if (w[2] == "--absent") {
      (*req)["expect_absent"] = true;
    } else {
      (*req)["expected"] = ParseValue(w[2]);
    }
  } else if (cmd == "find") {
    if (!need(1, "find VALUE")) return false;
    *req = {{"op", "search_by_value"}, {"value", ParseValue(Join(w, 1))}};
  } else if (cmd == "fulltext") {
    if (!need(1, "fulltext QUERY")) return false;
    *req = {{"op", "fulltext_search"}, {"query", Join(w, 1)}};
  } else if (cmd == "semantic") {
    std::string k, threshold;
    bool has_k = TakeFlag(&w, "--k", &k), has_t = TakeFlag(&w, "--threshold", &threshold);
    if (!need(1, "semantic QUERY [--k N] [--threshold X]")) return false;
    *req = {{"op", "semantic_search"}, {"query", Join(w, 1)}};
    try {
      if (has_k) (*req)["k"] = std::stoi(k);
      if (has_t) (*req)["threshold"] = std::stod(threshold);
    } catch (...) {
      *error = "--k and --threshold want numbers";
      return false;
    }
  } else if (cmd == "checkpoint") {
    if (!need(1, "checkpoint NAME")) return false;
    *req = {{"op", "checkpoint"}, {"name", w[1]}};
  } else if (cmd == "transfer-leader") {
    *req = {{"op", "transfer_leader"}};
    if (w.size() >= 2) {
      try {
        (*req)["to"] = std::stoull(w[1]);
      } catch (...) {
        *error = "transfer-leader wants a node id";
        return false;
      }
    }
  } else if (cmd == "raw") {
    if (!need(1, "raw JSON")) return false;
    *req = json::parse(Join(w, 1), nullptr, false);
    if (req->is_discarded()) {
      *error = "raw: not JSON";
      return false;
    }
  } else {
    *error = "unknown command '" + cmd + "' (try help)";
    return false;
  }
  return true;
}

// Prints the response for a command; returns the exit status it implies.
int Print(const std::string& cmd, const std::string& line) {
  json r = json::parse(line, nullptr, false);
  if (!r.is_object()) {
    std::fprintf(stderr, "(error) unreadable response: %s\n", line.c_str());
    return 1;
  }
  if (!r.value("ok", false)) {
    const json& e = r.contains("error") ? r["error"] : json::object();
    if (cmd == "get" && e.value("code", "") == "not_found") {
      std::printf("(nil)\n");
      return 0;
    }
    std::fprintf(stderr, "(error) %s: %s\n", e.value("code", "?").c_str(), e.value("message", "").c_str());
    return 1;
  }
  const json& result = r["result"];
  if (cmd == "get" || cmd == "raw" || cmd == "stats" || cmd == "mget") {
    std::printf("%s\n", (cmd == "raw" ? r : result).dump(cmd == "stats" ? 2 : -1).c_str());
  } else if (cmd == "scan") {
    for (const json& item : result["items"]) {
      std::printf("%s\t%s\n", item["key"].get<std::string>().c_str(), item["value"].dump().c_str());
    }
    if (result.value("more", false)) std::printf("(more)\n");
  } else if (cmd == "ping") {
    std::printf("%s\n", result.get<std::string>().c_str());
  } else if (result.is_null() || cmd == "del" || cmd == "delete") {
    std::printf("OK\n");
  } else {
    std::printf("%s\n", result.dump().c_str());
  }
  return 0;
}

int Run(kvstore::net::Client& client, const std::vector<std::string>& words) {
  if (words.empty()) return 0;
  if (words[0] == "help") {
    std::printf("%s\n", kHelp);
    return 0;
  }
  json req;
  std::string error;
  if (!BuildRequest(words, &req, &error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 2;
  }
  std::string response;
  kvstore::Status s = client.Call(req.dump(), &response);
  if (!s.ok()) {
    std::fprintf(stderr, "(error) %s\n", s.ToString().c_str());
    return 1;
  }
  return Print(words[0], response);
}

// Works on the directory itself, not through a server: the store's lock
// makes it fail rather than race a running server.
int Repair(std::vector<std::string> words) {
  std::string dir;
  if (!TakeFlag(&words, "--data-dir", &dir) || words.size() != 1) {
    std::fprintf(stderr, "usage: kvctl repair --data-dir DIR\n");
    return 2;
  }
  kvstore::RepairStats stats;
  kvstore::Status s = kvstore::DB::Repair(kvstore::Options{}, dir, &stats);
  if (!s.ok()) {
    std::fprintf(stderr, "repair failed: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("tables: %llu (rewritten from damaged ones: %llu)\n"
              "WAL segments replayed: %llu\n"
              "entries recovered: %llu\n"
              "damaged files: %llu\n"
              "files moved to %s/lost: %llu\n",
              static_cast<unsigned long long>(stats.tables), static_cast<unsigned long long>(stats.tables_salvaged),
              static_cast<unsigned long long>(stats.logs_replayed),
              static_cast<unsigned long long>(stats.entries_recovered),
              static_cast<unsigned long long>(stats.damaged_files), dir.c_str(),
              static_cast<unsigned long long>(stats.files_moved));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1", token_file, hosts;
  int port = 9000, timeout_ms = 30000;
  CLI::App app{"kvctl: the kvstore command-line client"};
  app.footer(kHelp);
  app.add_option("--host", host, "server address")->envname("KVSTORE_HOST")->capture_default_str();
  app.add_option("--port", port, "server port")->envname("KVSTORE_PORT")->capture_default_str();
  app.add_option("--hosts", hosts, "a cluster's client addresses, host:port,...: requests go to its leader")
      ->envname("KVSTORE_HOSTS");
  app.add_option("--token-file", token_file, "authenticate with this file's first line")
      ->envname("KVSTORE_AUTH_TOKEN_FILE");
  app.add_option("--timeout-ms", timeout_ms, "per-request timeout")->capture_default_str();
  // Everything from the command on is ours, not CLI11's ("set n -5" works).
  app.prefix_command();
  CLI11_PARSE(app, argc, argv);

  kvstore::net::ClientOptions options;
  options.addresses = {host + ":" + std::to_string(port)};
  if (!hosts.empty()) {
    options.addresses.clear();
    std::stringstream in(hosts);
    std::string a;
    while (std::getline(in, a, ',')) {
      if (!a.empty()) options.addresses.push_back(a);
    }
    // Ride out an election (about a second) rather than fail.
    options.failover_ms = 5000;
  }
  options.timeout_ms = timeout_ms;
  if (!token_file.empty()) {
    std::ifstream in(token_file);
    std::getline(in, options.token);
    while (!options.token.empty() && std::isspace(static_cast<unsigned char>(options.token.back()))) {
      options.token.pop_back();
    }
  }
  kvstore::net::Client client(options);

  std::vector<std::string> words = app.remaining();
  if (!words.empty() && words[0] == "repair") return Repair(words);
  if (!words.empty()) return Run(client, words);

  const bool tty = isatty(0);
  std::string line;
  int status = 0;
  for (;;) {
    if (tty) {
      std::printf("%s:%d> ", host.c_str(), port);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    words = SplitWords(line);
    if (!words.empty() && (words[0] == "quit" || words[0] == "exit")) break;
    status = Run(client, words);
    std::fflush(stdout);
  }
  return status;
}
