"""KVClient against a real kvserver, started on a free 127.0.0.1 port by the
test and stopped by it. Needs KVSERVER (the binary's path) and
PYTHONPATH=clients/python; ctest sets both."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest

from kvstore_client import KVClient, KVError


class ServerCase(unittest.TestCase):
    extra_args = []

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kvclient_test_")
        cls.proc = subprocess.Popen(
            [os.environ["KVSERVER"], "--host", "127.0.0.1", "--port", "0",
             "--data-dir", os.path.join(cls.dir, "data"), "--log-level", "warn"] + cls.extra_args,
            stdout=subprocess.PIPE, text=True)
        line = cls.proc.stdout.readline()
        if not line.startswith("listening 127.0.0.1:"):
            cls.proc.kill()
            cls.proc.wait()
            raise RuntimeError("kvserver did not start: %r" % line)
        cls.port = int(line.rsplit(":", 1)[1])

    @classmethod
    def tearDownClass(cls):
        cls.proc.send_signal(signal.SIGTERM)
        try:
            code = cls.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            cls.proc.kill()
            cls.proc.wait()
            code = "timeout"
        cls.proc.stdout.close()
        shutil.rmtree(cls.dir, ignore_errors=True)
        assert code == 0, "kvserver exited with %r" % (code,)

    def client(self, **kw):
        c = KVClient(host="127.0.0.1", port=self.port, timeout=10.0, **kw)
        self.addCleanup(c.close)
        return c


class KVClientTest(ServerCase):
    def test_set_get_delete_any_json_value(self):
        c = self.client()
        for value in ["Alice", 42, 1.5, True, None, [1, "two"], {"debug": True, "max_conn": 100}]:
            self.assertTrue(c.set("k", value))
            self.assertEqual(c.get("k"), value)
        self.assertTrue(c.delete("k"))
        self.assertIsNone(c.get("k"))
        self.assertIsNone(c.get("never-set"))

    def test_bulk_set_bulk_get_and_scan(self):
        c = self.client()
        self.assertEqual(c.bulk_set([("user:1", "Alice"), ("user:2", "Bob"), ("user:3", "Charlie")]), 3)
        self.assertEqual(c.bulk_get(["user:1", "user:3", "user:9"]), {"user:1": "Alice", "user:3": "Charlie"})
        self.assertEqual(c.scan(prefix="user:"),
                         [("user:1", "Alice"), ("user:2", "Bob"), ("user:3", "Charlie")])
        self.assertEqual(c.scan(start="user:2", end="user:3"), [("user:2", "Bob")])
        self.assertEqual(c.scan(prefix="user:", limit=2), [("user:1", "Alice"), ("user:2", "Bob")])

    def test_scan_pages_past_one_thousand(self):
        c = self.client()
        c.bulk_set([("page:%05d" % i, i) for i in range(2500)])
        c.set("pagf", "outside the prefix")
        got = c.scan(prefix="page:")
        self.assertEqual(len(got), 2500)
        self.assertEqual(got[-1], ("page:02499", 2499))

    def test_cas_and_txn(self):
        c = self.client()
        self.assertTrue(c.cas("counter", None, 1, expect_absent=True))
        self.assertFalse(c.cas("counter", None, 1, expect_absent=True))
        self.assertTrue(c.cas("counter", 1, 2))
        self.assertFalse(c.cas("counter", 1, 3))
        self.assertEqual(c.get("counter"), 2)
        r = c.txn([{"key": "counter", "value": 2}],
                  success=[{"op": "set", "key": "counter", "value": 10}, {"op": "get", "key": "counter"}])
        self.assertEqual(r, {"succeeded": True, "results": [None, {"found": True, "value": 10}]})

    def test_stats_has_keys_and_wal_size(self):
        c = self.client()
        c.set("s", 1)
        stats = c.stats()
        self.assertGreaterEqual(stats["keys"], 1)
        self.assertGreater(stats["wal_size"], 0)
        self.assertGreaterEqual(stats["ops"]["set"]["count"], 1)

    def test_errors_raise_kverror_with_code(self):
        c = self.client()
        with self.assertRaises(KVError) as ctx:
            c._call({"op": "frobnicate"})
        self.assertEqual(ctx.exception.code, "unknown_op")
        with self.assertRaises(KVError) as ctx:
            c.set(123, "not a string key")
        self.assertEqual(ctx.exception.code, "bad_request")
        with self.assertRaises(KVError) as ctx:
            c.semantic_search("x", k=0)
        self.assertEqual(ctx.exception.code, "bad_request")
        self.assertEqual(c.ping(), "pong")  # the connection is still good

    def test_searches(self):
        c = self.client()
        c.set("py:1", "python database engines")
        c.set("py:2", {"title": "a python tutorial", "tags": ["snake"]})
        c.set("py:3", "specific_value")
        c.set("py:4", "specific_value")
        self.assertEqual(c.search_by_value("specific_value"), ["py:3", "py:4"])
        self.assertEqual(c.fulltext_search("python database"), ["py:1"])
        self.assertEqual(sorted(c.fulltext_search("python database", mode="any")), ["py:1", "py:2"])
        keys = [k for k, s in c.fulltext_search("python", with_scores=True)]
        self.assertEqual(sorted(keys), ["py:1", "py:2"])
        hits = c.semantic_search("python databases", k=2, threshold=0.1)
        self.assertEqual(hits[0][0], "py:1")
        self.assertTrue(all(isinstance(score, float) for _, score in hits))
        c.delete("py:1")
        self.assertEqual(c.fulltext_search("database"), [])

    def test_request_ids_apply_once(self):
        c = self.client()
        self.assertTrue(c.cas("rid:lock", None, "me", expect_absent=True, request_id="py-1"))
        # The resend gets the first answer (True), not a conflict.
        self.assertTrue(c.cas("rid:lock", None, "me", expect_absent=True, request_id="py-1"))
        self.assertEqual(c.bulk_set([("rid:a", 1)], request_id="py-2"), 1)
        c.delete("rid:a")
        self.assertEqual(c.bulk_set([("rid:a", 1)], request_id="py-2"), 1)
        self.assertIsNone(c.get("rid:a"))  # not written again

    def test_one_connection_is_reused(self):
        with KVClient(host="127.0.0.1", port=self.port) as c:
            c.ping()
            first = c._sock
            for i in range(20):
                c.set("r%d" % i, i)
            self.assertIs(c._sock, first)
        self.assertIsNone(c._sock)

    def test_unreachable_server_raises_connection_error(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        with self.assertRaises(KVError) as ctx:
            KVClient(host="127.0.0.1", port=port, timeout=2.0).ping()
        self.assertEqual(ctx.exception.code, "connection")

    def test_hosts_skips_a_node_that_is_down(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
        s.close()
        with KVClient(hosts=["127.0.0.1:%d" % dead, "127.0.0.1:%d" % self.port], timeout=2.0) as c:
            c.set("failover", 1)
            self.assertEqual(c.get("failover"), 1)
            self.assertEqual(c.port, self.port)
        with self.assertRaises(KVError) as ctx:
            KVClient(hosts=["127.0.0.1:%d" % dead], failover_timeout=0.3).ping()
        self.assertEqual(ctx.exception.code, "connection")


class IdleReconnectTest(ServerCase):
    extra_args = ["--idle-timeout-ms", "200"]

    def test_reconnects_after_the_server_closed_an_idle_connection(self):
        import time
        c = self.client()
        c.set("a", 1)
        time.sleep(0.6)
        self.assertEqual(c.get("a"), 1)


class ClientVectorsTest(ServerCase):
    extra_args = ["--embedder", "client", "--embedder-dimension", "3"]

    def test_values_found_by_their_own_vectors(self):
        c = self.client()
        c.set("a", "alpha", vector=[1, 0, 0])
        self.assertEqual(c.bulk_set([("b", "beta", [0, 1, 0]), ("c", "gamma")]), 2)
        self.assertEqual(c.get("a"), "alpha")  # the vector is not part of the value
        hits = c.semantic_search([0.9, 0.1, 0], k=1, threshold=0)
        self.assertEqual(hits[0][0], "a")
        self.assertEqual(c.semantic_search([0, 1, 0], k=5, threshold=0.5)[0][0], "b")
        with self.assertRaises(KVError) as ctx:
            c.set("d", "delta", vector=[1, 2])
        self.assertEqual(ctx.exception.code, "bad_request")
        self.assertIsNone(c.get("d"))
        with self.assertRaises(KVError) as ctx:
            c.semantic_search("alpha")  # no text embedder on this server
        self.assertEqual(ctx.exception.code, "unavailable")


class AuthTest(ServerCase):
    @classmethod
    def setUpClass(cls):
        cls.token_dir = tempfile.mkdtemp(prefix="kvclient_token_")
        path = os.path.join(cls.token_dir, "token")
        with open(path, "w") as f:
            f.write("hunter2\n")
        cls.extra_args = ["--auth-token-file", path]
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.token_dir, ignore_errors=True)

    def test_token(self):
        with self.assertRaises(KVError) as ctx:
            self.client().ping()
        self.assertEqual(ctx.exception.code, "unauthorized")
        self.assertEqual(self.client(token="hunter2").ping(), "pong")


if __name__ == "__main__":
    unittest.main()
