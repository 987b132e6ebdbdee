"""kvstore_client: the Python client for kvserver (standard library only).

    from kvstore_client import KVClient, KVError

    with KVClient(host="localhost", port=9000) as client:
        client.set("name", "Alice")
        client.get("name")          # "Alice"; None when the key is missing
        client.bulk_set([("user:1", "Alice"), ("user:2", "Bob")])
        client.stats()["keys"]

The method names and shapes are those of the earlier Python store's
KVClient. Every failure the server reports raises KVError with its
protocol code (see docs/protocol.md) in .code.

A client holds one connection, opened on first use and reused; it is not
thread-safe (use one client per thread).

For a cluster, give every node's client address:

    KVClient(hosts=["10.0.0.1:9000", "10.0.0.2:9000", "10.0.0.3:9000"])

Requests then go to the leader: not_leader answers are followed, and while
an election is on (no node accepts, or none names a leader) the client
retries the nodes in turn with backoff for up to failover_timeout seconds.
A write whose connection broke after it was sent is not resent (its outcome
is unknown): that raises KVError("connection").
"""

import json
import socket
import time

__all__ = ["KVClient", "KVError"]


class KVError(Exception):
    """An error response from the server (or a broken connection: code
    "connection")."""

    def __init__(self, code, message, details=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.details = details or {}


def _named(request, request_id):
    if request_id is not None:
        request["request_id"] = str(request_id)
    return request


class KVClient:
    def __init__(self, host="localhost", port=9000, timeout=30.0, token=None, max_redirects=3,
                 hosts=None, failover_timeout=5.0):
        self.hosts = []
        for h in hosts or ():
            hh, _, pp = h.rpartition(":")
            self.hosts.append((hh, int(pp)))
        if self.hosts:
            host, port = self.hosts[0]
        self.failover_timeout = failover_timeout if self.hosts else 0.0
        self.host = host
        self.port = int(port)
        self.timeout = timeout
        self.token = token
        self.max_redirects = max_redirects
        self._sock = None
        self._buf = b""
        self._next_id = 0

    # -- connection ---------------------------------------------------------

    def _connect(self):
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        if self.token is not None:
            self._roundtrip({"op": "auth", "token": self.token})

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _readline(self):
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def _roundtrip(self, request):
        self._next_id += 1
        request = dict(request, id=self._next_id)
        self._sock.sendall(json.dumps(request, separators=(",", ":")).encode("utf-8") + b"\n")
        response = json.loads(self._readline())
        if response.get("id") != self._next_id:
            raise KVError("connection", "response out of order: %r" % (response,))
        return response

    def _next_host(self):
        """Moves to the next of hosts (for failover), if there are several."""
        if len(self.hosts) > 1:
            i = self.hosts.index((self.host, self.port)) if (self.host, self.port) in self.hosts else -1
            self.host, self.port = self.hosts[(i + 1) % len(self.hosts)]

    def _call(self, request):
        """Sends one request and returns its result, or raises KVError.
        Follows not_leader redirects; reconnects once when the reused
        connection turns out to be closed (e.g. by the idle timeout); with
        hosts, waits out elections (see the module doc)."""
        redirects = 0
        # A cas or txn that failed mid-flight may have been applied; resending
        # it could report a conflict with itself, so only the rest retry.
        may_retry = request.get("op") not in ("cas", "txn")
        deadline = time.monotonic() + self.failover_timeout
        backoff = 0.01

        def pause():
            nonlocal backoff
            if time.monotonic() + backoff > deadline:
                return False
            time.sleep(backoff)
            backoff = min(backoff * 2, 0.2)
            return True

        while True:
            reused = self._sock is not None
            try:
                if self._sock is None:
                    try:
                        self._connect()
                    except OSError as e:
                        self.close()
                        self._next_host()
                        if pause():
                            continue
                        raise KVError("connection", str(e)) from e
                response = self._roundtrip(request)
            except (OSError, ValueError) as e:  # socket errors, timeouts, bad JSON
                self.close()
                if not (reused and may_retry):
                    raise KVError("connection", str(e)) from e
                may_retry = False
                continue
            if response.get("ok"):
                return response.get("result")
            error = response.get("error") or {}
            code = error.get("code", "internal")
            if code == "not_leader" and error.get("leader") and redirects < self.max_redirects:
                redirects += 1
                host, _, port = error["leader"].rpartition(":")
                self.close()
                self.host, self.port = host or self.host, int(port)
                continue
            if code == "not_leader" and pause():
                # An election is on: try the next node in a moment.
                self.close()
                self._next_host()
                redirects = 0
                continue
            details = {k: v for k, v in error.items() if k not in ("code", "message")}
            raise KVError(code, error.get("message", ""), details)

    # -- ops ----------------------------------------------------------------

    def ping(self):
        return self._call({"op": "ping"})

    def set(self, key, value, vector=None, request_id=None):
        """vector: the value's own embedding for semantic_search (a list of
        numbers of the server's dimension), instead of the server's.
        request_id (every write takes one): resending the same write under
        the same id applies it at most once (docs/protocol.md)."""
        request = _named({"op": "set", "key": key, "value": value}, request_id)
        if vector is not None:
            request["vector"] = [float(x) for x in vector]
        self._call(request)
        return True

    def get(self, key):
        """The value, or None when the key is missing."""
        try:
            return self._call({"op": "get", "key": key})
        except KVError as e:
            if e.code == "not_found":
                return None
            raise

    def delete(self, key, request_id=None):
        self._call(_named({"op": "delete", "key": key}, request_id))
        return True

    def bulk_set(self, items, request_id=None):
        """items: (key, value) pairs, or (key, value, vector) triples carrying
        the value's own embedding; written all or nothing. Returns the count."""
        rows = []
        for item in items:
            if len(item) == 3:
                rows.append([item[0], item[1], [float(x) for x in item[2]]])
            else:
                k, v = item
                rows.append([k, v])
        return self._call(_named({"op": "bulk_set", "items": rows}, request_id))["count"]

    def bulk_get(self, keys):
        """A dict of the keys that exist."""
        return self._call({"op": "bulk_get", "keys": list(keys)})

    def scan(self, prefix=None, start=None, end=None, limit=None):
        """(key, value) pairs in key order: those starting with prefix, or in
        [start, end). With no limit, pages through everything."""
        out = []
        page_start = start
        while True:
            request = {"op": "scan"}
            if prefix is not None:
                request["prefix"] = prefix
                if page_start is not None:
                    # Continue a prefix scan as a range within the prefix.
                    request = {"op": "scan", "start": page_start}
            elif page_start is not None:
                request["start"] = page_start
            if end is not None:
                request["end"] = end
            want = 1000 if limit is None else min(1000, limit - len(out))
            request["limit"] = want
            result = self._call(request)
            for item in result["items"]:
                if prefix is not None and not item["key"].startswith(prefix):
                    return out
                out.append((item["key"], item["value"]))
            if not result["more"] or (limit is not None and len(out) >= limit):
                return out
            page_start = out[-1][0] + "\u0000"

    def cas(self, key, expected, value, expect_absent=False, request_id=None):
        """Sets key to value if its current value equals expected (or, with
        expect_absent=True, if it has none). True if it did, False if the
        current value differed."""
        request = _named({"op": "cas", "key": key, "value": value}, request_id)
        if expect_absent:
            request["expect_absent"] = True
        else:
            request["expected"] = expected
        try:
            self._call(request)
            return True
        except KVError as e:
            if e.code == "conflict":
                return False
            raise

    def txn(self, compare, success=(), failure=(), request_id=None):
        """etcd-style transaction; returns {"succeeded": bool, "results": [...]}."""
        return self._call(_named({"op": "txn", "compare": list(compare),
                                  "success": list(success), "failure": list(failure)}, request_id))

    def transfer_leader(self, to=0):
        """Cluster: hands leadership to node `to` (0: any); returns the new
        leader as {"leader_id": N, "leader": "host:port"}."""
        return self._call({"op": "transfer_leader", "to": to})

    def stats(self):
        return self._call({"op": "stats"})

    def search_by_value(self, value, limit=1000):
        """Keys whose current value equals value, in key order."""
        return self._call({"op": "search_by_value", "value": value, "limit": limit})

    def fulltext_search(self, query, limit=10, mode="all", with_scores=False):
        """Keys whose values hold the query's words (mode "all" or "any"),
        best BM25 score first; (key, score) pairs with with_scores=True."""
        hits = self._call({"op": "fulltext_search", "query": query, "limit": limit, "mode": mode})
        if with_scores:
            return [(h["key"], h["score"]) for h in hits]
        return [h["key"] for h in hits]

    def semantic_search(self, query, k=10, threshold=0.5):
        """(key, cosine similarity) pairs, best first, similarity >= threshold.
        query is text, or a list of numbers embedded on the client's side."""
        request = {"op": "semantic_search", "k": k, "threshold": threshold}
        if isinstance(query, str):
            request["query"] = query
        else:
            request["vector"] = [float(x) for x in query]
        return [(h["key"], h["score"]) for h in self._call(request)]
