#include "index/query.h"

#include <stdlib.h>  // getloadavg

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <cmath>
#include <map>
#include <unordered_map>
#include <unordered_set>

namespace kvstore::index {

namespace {

// Best first; equal scores by key, then newest first, so results are stable.
bool Better(const Candidate& a, const Candidate& b) {
  if (a.score != b.score) return a.score > b.score;
  int c = a.key.compare(b.key);
  return c != 0 ? c < 0 : a.seq > b.seq;
}

// Walks candidates best first, keeping the live ones, one hit per key.
// Remembers every version it checked, so a caller may walk again (the
// semantic search's next round) without asking the LiveCheck twice.
class LiveCollector {
 public:
  LiveCollector(bool want_values, const LiveCheck& live, std::vector<Hit>* hits)
      : want_values_(want_values), live_(live), hits_(hits) {}

  // Starts a new walk: no hits yet, the checked versions remembered.
  void Restart() {
    hits_->clear();
    hit_keys_.clear();
  }

  Status Offer(const Candidate& c) {
    if (hit_keys_.count(c.key) != 0) return Status::OK();
    std::string version = c.key;
    version.append(reinterpret_cast<const char*>(&c.seq), sizeof(c.seq));
    auto it = checked_.find(version);
    if (it == checked_.end()) {
      Checked result;
      Status s = live_(c.key, c.seq, &result.live, want_values_ ? &result.value : nullptr);
      if (!s.ok()) return s;
      if (!result.live) result.value.clear();
      it = checked_.emplace(std::move(version), std::move(result)).first;
    }
    if (!it->second.live) return Status::OK();
    hit_keys_.insert(c.key);
    Hit hit;
    hit.key = c.key;
    hit.score = c.score;
    if (want_values_) {
      hit.value = it->second.value;
      hit.has_value = true;
    }
    hits_->push_back(std::move(hit));
    return Status::OK();
  }

 private:
  struct Checked {
    bool live = false;
    std::string value;
  };
  bool want_values_;
  const LiveCheck& live_;
  std::vector<Hit>* hits_;
  std::unordered_set<std::string> hit_keys_;
  std::unordered_map<std::string, Checked> checked_;  // key + seq -> outcome
};

constexpr unsigned kMaxScanThreads = 4;

// Runs scan(i) for every source i, spread over up to one thread per core
// (this one included) from min_vectors vectors on: a semantic query's time
// is mostly the exact scans of the segments, which are independent. Biggest
// sources first, taken from a shared counter, so the threads finish
// together. The helpers are detached and this thread waits only for the
// scans they took, never for a helper to be scheduled: on a loaded machine
// a helper that starts late finds nothing left and exits, and one that
// cannot be started at all leaves the work here.
template <typename Scan>
void ForEachSource(const std::vector<const IndexSource*>& sources, uint64_t min_vectors, Scan&& scan) {
  std::vector<std::pair<uint64_t, size_t>> order;  // (vectors, source)
  uint64_t total = 0;
  for (size_t i = 0; i < sources.size(); i++) {
    const uint64_t v = sources[i]->VectorCount();
    total += v;
    if (v > 0) order.emplace_back(v, i);
  }
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const size_t threads = std::min<size_t>({cores, kMaxScanThreads, order.size()});
  // On a machine without an idle core (1-minute load average) a helper
  // waits for a turn and the query gets slower, not faster (measured:
  // p50 8.0 ms spread, 6.7 ms on one thread, at a load average of 9 on 2
  // cores). min_vectors == 0 spreads regardless (tests).
  auto busy = [&] {
    double load = 0;
    return min_vectors > 0 && getloadavg(&load, 1) == 1 && load > cores - 0.5;
  };
  if (threads < 2 || total < min_vectors || busy()) {
    for (const auto& [v, i] : order) scan(i);
    return;
  }
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  // Shared with the helpers, which may outlive this call: everything they
  // touch after the last scan is here. `run` is called only for a source a
  // thread took, and this call returns only when every taken one is done.
  struct Shared {
    std::vector<size_t> sources;
    std::function<void(size_t)> run;
    std::atomic<size_t> next{0};
    std::atomic<size_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
    void Work() {
      for (size_t j; (j = next.fetch_add(1, std::memory_order_relaxed)) < sources.size();) {
        run(sources[j]);
        if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == sources.size()) {
          std::lock_guard<std::mutex> lock(mu);
          cv.notify_all();
        }
      }
    }
  };
  auto shared = std::make_shared<Shared>();
  for (const auto& [v, i] : order) shared->sources.push_back(i);
  shared->run = [&scan](size_t i) { scan(i); };
  for (size_t t = 1; t < threads; t++) {
    try {
      std::thread([shared] { shared->Work(); }).detach();
    } catch (const std::system_error&) {
      break;  // no thread to be had: this one does the rest
    }
  }
  shared->Work();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->done.load(std::memory_order_acquire) == shared->sources.size(); });
}

}  // namespace

Status ExactSearch(const std::vector<const IndexSource*>& sources, std::string_view value, uint64_t max_seq,
                   size_t limit, bool want_values, const LiveCheck& live, std::vector<Hit>* hits) {
  hits->clear();
  if (limit == 0) return Status::OK();
  const uint64_t hash = ValueHash(value);
  std::vector<Candidate> candidates;
  for (const IndexSource* source : sources) source->ExactCandidates(hash, max_seq, &candidates);
  // Only a key's newest candidate can be live: an older one is shadowed at
  // least by that newer one.
  std::map<std::string_view, uint64_t> newest;
  for (const Candidate& c : candidates) {
    auto [it, inserted] = newest.emplace(c.key, c.seq);
    if (!inserted && c.seq > it->second) it->second = c.seq;
  }
  std::string current;
  for (const auto& [key, seq] : newest) {
    bool is_live = false;
    current.clear();
    Status s = live(key, seq, &is_live, &current);
    if (!s.ok()) return s;
    if (!is_live || current != value) continue;  // shadowed, or a hash collision
    Hit hit;
    hit.key.assign(key);
    if (want_values) {
      hit.value = current;
      hit.has_value = true;
    }
    hits->push_back(std::move(hit));
    if (hits->size() == limit) break;
  }
  return Status::OK();
}

Status FullTextSearch(const std::vector<const IndexSource*>& sources, const Analyzer& analyzer,
                      std::string_view query, bool match_all, uint64_t max_seq, size_t limit, bool want_values,
                      const LiveCheck& live, std::vector<Hit>* hits) {
  hits->clear();
  if (limit == 0 || query.empty()) return Status::OK();
  std::vector<std::string> tokens;
  analyzer.Tokenize(query, &tokens);
  std::vector<std::string> terms;  // distinct, in query order
  for (std::string& t : tokens) {
    if (std::find(terms.begin(), terms.end(), t) == terms.end()) terms.push_back(std::move(t));
  }
  if (terms.empty()) return Status::OK();

  uint64_t n = 0, total = 0;
  for (const IndexSource* source : sources) {
    n += source->DocCount();
    total += source->TotalLength();
  }
  if (n == 0) return Status::OK();
  std::vector<double> idf(terms.size());
  for (size_t i = 0; i < terms.size(); i++) {
    uint64_t df = 0;
    for (const IndexSource* source : sources) df += source->DocFrequency(terms[i]);
    const double dfd = static_cast<double>(std::min(df, n));
    idf[i] = std::log(1.0 + (static_cast<double>(n) - dfd + 0.5) / (dfd + 0.5));
  }
  const double avgdl = static_cast<double>(total) / static_cast<double>(n);

  std::vector<Candidate> candidates;
  for (const IndexSource* source : sources) {
    source->ScoreTerms(terms, idf, avgdl, match_all, max_seq, &candidates);
  }
  // A heap, not a sort: most queries stop after the first few dozen.
  auto worse = [](const Candidate& a, const Candidate& b) { return Better(b, a); };
  std::make_heap(candidates.begin(), candidates.end(), worse);
  LiveCollector collector(want_values, live, hits);
  for (auto end = candidates.end(); end != candidates.begin() && hits->size() < limit;) {
    std::pop_heap(candidates.begin(), end, worse);
    --end;
    Status s = collector.Offer(*end);
    if (!s.ok()) return s;
  }
  return Status::OK();
}

Status SemanticSearch(const std::vector<const IndexSource*>& sources, const std::vector<float>& query, size_t k,
                      double threshold, uint64_t max_seq, bool want_values, const LiveCheck& live,
                      std::vector<Hit>* hits, uint64_t parallel_min_vectors) {
  hits->clear();
  if (k == 0 || query.empty()) return Status::OK();
  const int dim = static_cast<int>(query.size());
  LiveCollector collector(want_values, live, hits);
  for (size_t n = k;; n *= 2) {
    std::vector<Candidate> candidates;
    // A source that returned all n it was asked for may hold more, each
    // scoring at most its n-th: the highest such score bounds what any
    // source has not shown yet.
    bool more = false;
    double unseen_bound = -2.0;
    std::vector<std::vector<Candidate>> per_source(sources.size());
    ForEachSource(sources, parallel_min_vectors, [&](size_t i) { sources[i]->NearestVectors(query.data(), dim, n, max_seq, &per_source[i]); });
    for (std::vector<Candidate>& found : per_source) {
      if (found.size() == n && found.back().score >= threshold) {
        more = true;
        unseen_bound = std::max(unseen_bound, found.back().score);
      }
      candidates.insert(candidates.end(), std::make_move_iterator(found.begin()), std::make_move_iterator(found.end()));
    }
    std::sort(candidates.begin(), candidates.end(), Better);
    // Every round walks from the top again, so hits stay best first; the
    // collector remembers the versions checked in earlier rounds.
    collector.Restart();
    for (const Candidate& c : candidates) {
      if (c.score < threshold || hits->size() >= k) break;
      Status s = collector.Offer(c);
      if (!s.ok()) return s;
    }
    // Done when nothing unseen can beat the k-th hit. Dead candidates push a
    // source's live docs further down its list, so k live hits alone are
    // not enough: a source may have a better live doc just past its n-th.
    if (!more) break;
    if (hits->size() >= k && (*hits)[k - 1].score >= unseen_bound) break;
  }
  return Status::OK();
}

}  // namespace kvstore::index
