#include "bench/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

namespace kvbench {

namespace {

std::string Fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// 1234567 -> "1.23M", 45678 -> "45.7k".
std::string Rate(double v) {
  if (v >= 1e6) return Fmt("%.2fM", v / 1e6);
  if (v >= 1e4) return Fmt("%.1fk", v / 1e3);
  if (v >= 1e3) return Fmt("%.2fk", v / 1e3);
  return Fmt("%.0f", v);
}

// Axis ticks are powers of ten: 100, 1k, 10k, 1M.
std::string Tick(double v) {
  if (v >= 1e6) return Fmt("%gM", v / 1e6);
  if (v >= 1e3) return Fmt("%gk", v / 1e3);
  return Fmt("%g", v);
}

std::string Micros(double us) {
  if (us >= 1e6) return Fmt("%.2f s", us / 1e6);
  if (us >= 1e3) return Fmt("%.2f ms", us / 1e3);
  return Fmt("%.0f µs", us);
}

std::string Size(uint64_t b) {
  if (b >= (1u << 20) && b % (1u << 20) == 0) return std::to_string(b >> 20) + " MiB";
  if (b >= 1024 && b % 1024 == 0) return std::to_string(b >> 10) + " KiB";
  return std::to_string(b) + " B";
}

std::string Params(const Record& r) {
  std::string p;
  if (r.dataset > 0) p += Rate(static_cast<double>(r.dataset)) + " keys, ";
  // The engine groups run threads in one process, not connections.
  const bool threads = r.group.starts_with("engine");
  p += std::to_string(r.clients) + (threads ? (r.clients == 1 ? " thread" : " threads") : (r.clients == 1 ? " client" : " clients"));
  if (r.pipeline > 1) p += ", pipeline " + std::to_string(r.pipeline);
  if (r.value_size > 0) p += ", " + Size(r.value_size);
  return p;
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#e377c2"};

// Axis helpers: a log10 scale from lo to hi onto [0, len].
struct LogScale {
  double lo, hi, len;
  double operator()(double v) const {
    v = std::max(v, lo);
    return (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) * len;
  }
};

// Powers of ten covering [min, max] (at least one decade).
std::pair<double, double> Decades(double min, double max) {
  double lo = std::pow(10, std::floor(std::log10(std::max(min, 1e-3))));
  double hi = std::pow(10, std::ceil(std::log10(std::max(max, lo * 10))));
  if (hi <= lo) hi = lo * 10;
  return {lo, hi};
}

std::string Header(int w, int h, const std::string& title) {
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(w) + "\" height=\"" +
         std::to_string(h) + "\" viewBox=\"0 0 " + std::to_string(w) + " " + std::to_string(h) +
         "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
         "<text x=\"" + std::to_string(w / 2) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" +
         Escape(title) + "</text>\n";
}

std::string Text(double x, double y, const std::string& s, const char* anchor = "middle", const std::string& extra = "") {
  return "<text x=\"" + Fmt("%.1f", x) + "\" y=\"" + Fmt("%.1f", y) + "\" text-anchor=\"" + anchor + "\"" + extra +
         ">" + Escape(s) + "</text>\n";
}

std::string Line(double x1, double y1, double x2, double y2, const char* stroke, double width = 1) {
  return "<line x1=\"" + Fmt("%.1f", x1) + "\" y1=\"" + Fmt("%.1f", y1) + "\" x2=\"" + Fmt("%.1f", x2) +
         "\" y2=\"" + Fmt("%.1f", y2) + "\" stroke=\"" + stroke + "\" stroke-width=\"" + Fmt("%.1f", width) + "\"/>\n";
}

// Horizontal grid lines and labels for a log y axis.
std::string LogYAxis(const LogScale& y, double left, double top, double width, std::string (*label)(double)) {
  std::string s;
  for (double v = y.lo; v <= y.hi * 1.0001; v *= 10) {
    double py = top + y.len - y(v);
    s += Line(left, py, left + width, py, "#dddddd");
    s += Text(left - 6, py + 4, label(v), "end");
  }
  return s;
}

}  // namespace

std::string Record::ToJson() const {
  nlohmann::json j = {{"system", system},   {"group", group},           {"workload", workload},
                      {"dataset", dataset}, {"clients", clients},       {"pipeline", pipeline},
                      {"value_size", value_size}, {"ops", ops},         {"errors", errors}, {"misses", misses},
                      {"seconds", seconds}, {"ops_per_sec", ops_per_sec}, {"mb_per_sec", mb_per_sec},
                      {"p50_us", p50_us},   {"p90_us", p90_us},         {"p99_us", p99_us},
                      {"p999_us", p999_us}, {"max_us", max_us}};
  if (server_cpu_us > 0) j["server_cpu_us"] = server_cpu_us;
  if (group == "durability") {
    j["acknowledged"] = acknowledged;
    j["lost"] = lost;
  }
  return j.dump();
}

std::string Record::Key() const {
  return group + "|" + workload + "|" + std::to_string(dataset) + "|" + std::to_string(clients) + "|" +
         std::to_string(pipeline) + "|" + std::to_string(value_size);
}

std::string MarkdownSummary(const std::vector<Record>& records, const std::string& header) {
  // Each group is compared with the peers that ran it: Redis for the
  // server's, RocksDB and LevelDB (and raw) for the engine's.
  std::map<std::string, const Record*> peer;  // system + "|" + Key()
  std::map<std::string, std::vector<std::string>> group_peers;
  for (const Record& r : records) {
    if (r.system == "kvstore") continue;
    peer[r.system + "|" + r.Key()] = &r;
    auto& list = group_peers[r.group];
    if (std::find(list.begin(), list.end(), r.system) == list.end()) list.push_back(r.system);
  }
  std::string md = header;
  std::string group;
  std::vector<std::string> peers;
  bool cpu = false;  // the group shows the servers' CPU per op
  auto cpu_cell = [&cpu](const Record& r) -> std::string {
    if (!cpu) return "";
    return r.server_cpu_us > 0 ? " " + Fmt("%.1f µs", r.server_cpu_us) + " |" : " — |";
  };
  for (const Record& r : records) {
    if (r.system != "kvstore") continue;
    if (r.group == "durability") continue;
    if (r.group != group) {
      group = r.group;
      peers = group_peers[group];
      cpu = std::any_of(records.begin(), records.end(),
                        [&](const Record& q) { return q.group == group && q.server_cpu_us > 0; });
      const std::string cpu_column = cpu ? " CPU/op |" : "";
      const std::string cpu_rule = cpu ? "---|" : "";
      md += "\n### " + group + "\n\n| workload | parameters | kvstore ops/s | p50 | p99 |" + cpu_column;
      std::string rule = "\n|---|---|---|---|---|" + cpu_rule;
      for (const std::string& p : peers) {
        md += " " + p + " ops/s | p50 | p99 |" + cpu_column + " kvstore / " + p + " |";
        rule += "---|---|---|" + cpu_rule + "---|";
      }
      md += rule + "\n";
    }
    std::string rate = Rate(r.ops_per_sec);
    if (r.mb_per_sec >= 1 && r.value_size >= 1024) rate += " (" + Fmt("%.0f", r.mb_per_sec) + " MB/s)";
    if (r.errors > 0) rate += " ⚠ " + std::to_string(r.errors) + " errors";
    if (r.misses > 0) rate += " (" + std::to_string(r.misses) + " misses)";
    md += "| " + r.workload + " | " + Params(r) + " | " + rate + " | " + Micros(r.p50_us) + " | " + Micros(r.p99_us) +
          " |" + cpu_cell(r);
    for (const std::string& p : peers) {
      auto it = peer.find(p + "|" + r.Key());
      if (it == peer.end()) {
        md += std::string(" — | | |") + (cpu ? " |" : "") + " |";
      } else {
        const Record& q = *it->second;
        md += " " + Rate(q.ops_per_sec) + (q.errors > 0 ? " ⚠ errors" : "") + " | " + Micros(q.p50_us) + " | " +
              Micros(q.p99_us) + " |" + cpu_cell(q) + " " +
              (q.ops_per_sec > 0 ? Fmt("%.2f×", r.ops_per_sec / q.ops_per_sec) : "—") + " |";
      }
    }
    md += "\n";
  }
  bool any = false;
  for (const Record& r : records) {
    if (r.group != "durability") continue;
    if (!any) {
      md += "\n### durability (kill -9 under load, restart, read back)\n\n"
            "| system | writers | acknowledged | lost | verdict |\n|---|---|---|---|---|\n";
      any = true;
    }
    md += "| " + r.system + " | " + std::to_string(r.clients) + " | " + std::to_string(r.acknowledged) + " | " +
          std::to_string(r.lost) + " | " + (r.lost == 0 && r.acknowledged > 0 ? "PASS" : "FAIL") + " |\n";
  }
  md += "\n### charts\n\n![throughput against clients](throughput_vs_clients.svg)\n\n"
        "![latency percentiles](latency_percentiles.svg)\n\n![large values](large_values.svg)\n";
  return md;
}

std::string ThroughputSvg(const std::vector<Record>& records) {
  const int W = 760, H = 460, left = 80, top = 50, right = 170, bottom = 60;
  const double pw = W - left - right, ph = H - top - bottom;
  std::map<std::string, std::vector<const Record*>> series;  // "system set" -> points
  int max_clients = 1;
  double lo = 1e12, hi = 0;
  for (const Record& r : records) {
    if (r.group != "clients" || r.ops_per_sec <= 0) continue;
    series[r.system + " " + r.workload].push_back(&r);
    max_clients = std::max(max_clients, r.clients);
    lo = std::min(lo, r.ops_per_sec);
    hi = std::max(hi, r.ops_per_sec);
  }
  std::string s = Header(W, H, "Throughput against concurrent clients (pipeline 1)");
  if (series.empty()) return s + Text(W / 2.0, H / 2.0, "no data") + "</svg>\n";
  auto [ylo, yhi] = Decades(lo, hi);
  LogScale y{ylo, yhi, ph};
  LogScale x{1, static_cast<double>(std::max(2, max_clients)), pw};
  s += LogYAxis(y, left, top, pw, [](double v) { return Tick(v); });
  for (int c = 1; c <= max_clients; c *= 2) {
    double px = left + x(c);
    s += Line(px, top + ph, px, top + ph + 5, "#333333");
    s += Text(px, top + ph + 20, std::to_string(c));
  }
  s += Line(left, top + ph, left + pw, top + ph, "#333333") + Line(left, top, left, top + ph, "#333333");
  s += Text(left + pw / 2, H - 15, "clients (connections, one request in flight each)");
  s += Text(18, top + ph / 2, "ops/s", "middle", " transform=\"rotate(-90 18 " + Fmt("%.1f", top + ph / 2) + ")\"");
  int i = 0;
  for (auto& [name, pts] : series) {
    std::sort(pts.begin(), pts.end(), [](const Record* a, const Record* b) { return a->clients < b->clients; });
    const char* color = kColors[i % 8];
    const char* dash = name.find(" get") != std::string::npos ? " stroke-dasharray=\"6 3\"" : "";
    std::string path;
    for (const Record* r : pts) {
      double px = left + x(r->clients), py = top + ph - y(r->ops_per_sec);
      path += (path.empty() ? "M" : " L") + Fmt("%.1f", px) + "," + Fmt("%.1f", py);
      s += "<circle cx=\"" + Fmt("%.1f", px) + "\" cy=\"" + Fmt("%.1f", py) + "\" r=\"3\" fill=\"" + color + "\"/>\n";
    }
    s += "<path d=\"" + path + "\" fill=\"none\" stroke=\"" + color + "\" stroke-width=\"2\"" + dash + "/>\n";
    double ly = top + 10 + 20 * i;
    s += "<line x1=\"" + std::to_string(W - right + 15) + "\" y1=\"" + Fmt("%.1f", ly) + "\" x2=\"" +
         std::to_string(W - right + 45) + "\" y2=\"" + Fmt("%.1f", ly) + "\" stroke=\"" + color +
         "\" stroke-width=\"2\"" + dash + "/>\n";
    s += Text(W - right + 50, ly + 4, name, "start");
    ++i;
  }
  return s + "</svg>\n";
}

std::string LatencySvg(const std::vector<Record>& records) {
  // One group of bars per (system, op): the ops measured at 50 clients.
  std::vector<const Record*> picked;
  std::set<std::string> seen;
  for (const Record& r : records) {
    bool wanted = (r.group == "dataset" || r.group == "mixed" || r.group == "bulk" || r.group == "search") &&
                  r.p50_us > 0;
    if (!wanted) continue;
    // The largest dataset's figures stand for the dataset group.
    std::string label = r.system + " " + r.workload;
    if (r.group == "dataset") {
      for (const Record& o : records) {
        if (o.group == "dataset" && o.system == r.system && o.workload == r.workload && o.dataset > r.dataset) wanted = false;
      }
    }
    if (wanted && seen.insert(label).second) picked.push_back(&r);
  }
  const int bar = 9, gap = 18, left = 80, top = 50, bottom = 110, legend = 150;
  const int W = std::max(500, left + legend + static_cast<int>(picked.size()) * (4 * bar + gap) + 20);
  const int H = 460;
  const double ph = H - top - bottom;
  std::string s = Header(W, H, "Latency percentiles per request (log scale)");
  if (picked.empty()) return s + Text(W / 2.0, H / 2.0, "no data") + "</svg>\n";
  double lo = 1e12, hi = 0;
  for (const Record* r : picked) {
    lo = std::min(lo, r->p50_us);
    hi = std::max(hi, r->p999_us);
  }
  auto [ylo, yhi] = Decades(lo, hi);
  LogScale y{ylo, yhi, ph};
  const double pw = W - left - legend;
  s += LogYAxis(y, left, top, pw, [](double v) { return v >= 1e3 ? Tick(v / 1e3) + " ms" : Tick(v) + " µs"; });
  s += Line(left, top + ph, left + pw, top + ph, "#333333") + Line(left, top, left, top + ph, "#333333");
  const char* names[] = {"p50", "p90", "p99", "p99.9"};
  double x = left + 12;
  for (const Record* r : picked) {
    const double v[] = {r->p50_us, r->p90_us, r->p99_us, r->p999_us};
    for (int k = 0; k < 4; ++k) {
      double h = std::max(1.0, y(v[k]));
      s += "<rect x=\"" + Fmt("%.1f", x + k * bar) + "\" y=\"" + Fmt("%.1f", top + ph - h) + "\" width=\"" +
           std::to_string(bar - 1) + "\" height=\"" + Fmt("%.1f", h) + "\" fill=\"" + kColors[k] + "\"><title>" +
           Escape(r->system + " " + r->workload + " " + names[k] + ": " + Micros(v[k])) + "</title></rect>\n";
    }
    double cx = x + 2 * bar;
    s += Text(cx, top + ph + 12, r->system + " " + r->workload, "end",
              " transform=\"rotate(-40 " + Fmt("%.1f", cx) + " " + Fmt("%.1f", top + ph + 12) + ")\"");
    x += 4 * bar + gap;
  }
  for (int k = 0; k < 4; ++k) {
    double ly = top + 10 + 20 * k;
    s += "<rect x=\"" + std::to_string(W - legend + 20) + "\" y=\"" + Fmt("%.1f", ly - 8) +
         "\" width=\"12\" height=\"12\" fill=\"" + kColors[k] + "\"/>\n";
    s += Text(W - legend + 38, ly + 2, names[k], "start");
  }
  return s + "</svg>\n";
}

std::string LargeValuesSvg(const std::vector<Record>& records) {
  const int W = 760, H = 420, left = 80, top = 50, right = 170, bottom = 60;
  const double pw = W - left - right, ph = H - top - bottom;
  std::map<std::string, std::vector<const Record*>> series;
  double lo = 1e12, hi = 0, smin = 1e18, smax = 0;
  for (const Record& r : records) {
    if (r.group != "large" || r.mb_per_sec <= 0) continue;
    series[r.system + " " + r.workload].push_back(&r);
    lo = std::min(lo, r.mb_per_sec);
    hi = std::max(hi, r.mb_per_sec);
    smin = std::min(smin, static_cast<double>(r.value_size));
    smax = std::max(smax, static_cast<double>(r.value_size));
  }
  std::string s = Header(W, H, "Large values: MB/s against value size");
  if (series.empty()) return s + Text(W / 2.0, H / 2.0, "no data") + "</svg>\n";
  auto [ylo, yhi] = Decades(lo, hi);
  LogScale y{ylo, yhi, ph};
  LogScale x{smin, std::max(smax, smin * 2), pw};
  s += LogYAxis(y, left, top, pw, [](double v) { return Fmt("%g MB/s", v); });
  std::set<uint64_t> sizes;
  for (auto& [n, pts] : series) for (const Record* r : pts) sizes.insert(r->value_size);
  for (uint64_t sz : sizes) {
    double px = left + x(static_cast<double>(sz));
    s += Line(px, top + ph, px, top + ph + 5, "#333333") + Text(px, top + ph + 20, Size(sz));
  }
  s += Line(left, top + ph, left + pw, top + ph, "#333333") + Line(left, top, left, top + ph, "#333333");
  s += Text(left + pw / 2, H - 15, "value size");
  int i = 0;
  for (auto& [name, pts] : series) {
    std::sort(pts.begin(), pts.end(), [](const Record* a, const Record* b) { return a->value_size < b->value_size; });
    const char* color = kColors[i % 8];
    std::string path;
    for (const Record* r : pts) {
      double px = left + x(static_cast<double>(r->value_size)), py = top + ph - y(r->mb_per_sec);
      path += (path.empty() ? "M" : " L") + Fmt("%.1f", px) + "," + Fmt("%.1f", py);
      s += "<circle cx=\"" + Fmt("%.1f", px) + "\" cy=\"" + Fmt("%.1f", py) + "\" r=\"3\" fill=\"" + color + "\"/>\n";
    }
    s += "<path d=\"" + path + "\" fill=\"none\" stroke=\"" + color + "\" stroke-width=\"2\"/>\n";
    double ly = top + 10 + 20 * i;
    s += Line(W - right + 15, ly, W - right + 45, ly, color, 2) + Text(W - right + 50, ly + 4, name, "start");
    ++i;
  }
  return s + "</svg>\n";
}

}  // namespace kvbench
