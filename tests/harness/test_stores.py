"""The stores the harness makes for backends that keep their data outside the daemon, and
how a cell reports fio's verification failures."""

import os
import shutil
import socket
import tempfile
import unittest

import helpers  # noqa: F401

from userblk_harness import runner, stores


class StoreTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def test_backends_that_keep_their_own_data_are_named_as_they_are(self):
        for name in ("ram", "null"):
            with stores.make(name, "256M", self.dir) as s:
                self.assertEqual(s.spec, name)
                self.assertIsNone(s.server_pid)
                self.assertFalse(s.outlives_daemon)
        self.assertEqual(os.listdir(self.dir), [])

    def test_file_is_an_empty_backing_file_removed_on_close(self):
        s = stores.make("file", "256M", self.dir)
        self.assertTrue(s.outlives_daemon)
        self.assertEqual(s.spec, f"file:path={s.path}")
        self.assertEqual(os.path.dirname(s.path), self.dir)
        self.assertEqual(os.path.getsize(s.path), 0)
        self.assertEqual(s.describe()["path"], s.path)
        s.close()
        s.close()
        self.assertEqual(os.listdir(self.dir), [])

    def test_backend_variants_name_their_options(self):
        self.assertEqual(stores.split_backend("file:direct=1"), ("file", {"direct": "1"}))
        self.assertEqual(stores.split_backend("ram"), ("ram", {}))
        with self.assertRaises(stores.StoreError):
            stores.split_backend("file:direct")
        with self.assertRaises(stores.StoreError) as cm:
            stores.make("forward:tls=1", "1M", self.dir)
        self.assertIn("file:direct=1", str(cm.exception))
        # A backend that keeps its data itself gets its options as they are.
        s = stores.make("null:fill=none", "1M", self.dir)
        self.assertEqual(s.spec, "null:fill=none")
        self.assertFalse(s.outlives_daemon)
        s.close()
        self.assertEqual(stores.parse_size("256M"), 256 << 20)
        self.assertEqual(stores.parse_size("4096"), 4096)

    def test_forward_serves_nbd_on_localhost_until_closed(self):
        if shutil.which(stores.NBDKIT) is None:
            self.skipTest("nbdkit is not installed (Debian package nbdkit)")
        try:
            stores.free_port()
        except OSError as e:
            self.skipTest(f"no TCP on 127.0.0.1: {e}")
        logs = os.path.join(self.dir, "cell")
        os.mkdir(logs)
        s = stores.make("forward", "16M", self.dir, logs)
        try:
            self.assertEqual(s.spec, f"forward:host=127.0.0.1,port={s.port}")
            self.assertTrue(s.alive())
            self.assertEqual(s.describe()["server_pid"], s.server_pid)
            self.assertIn("memory", s.server_argv)
            self.assertIn("16M", s.server_argv)
            with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
                self.assertEqual(c.recv(8, socket.MSG_WAITALL), b"NBDMAGIC")
        finally:
            s.close()
        self.assertFalse(s.alive())
        self.assertTrue(os.path.exists(os.path.join(logs, "server.log")))
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", s.port), timeout=2).close()

    def test_forward_without_nbdkit_says_what_to_install(self):
        old = stores.NBDKIT
        stores.NBDKIT = "nbdkit-that-is-not-there"
        self.addCleanup(setattr, stores, "NBDKIT", old)
        with self.assertRaises(stores.StoreError) as cm:
            stores.make("forward", "16M", self.dir)
        self.assertIn("Debian package nbdkit", str(cm.exception))


class VerifyFailureTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def log(self, text):
        with open(os.path.join(self.dir, "fio.log"), "w") as f:
            f.write(text)

    def test_bad_data_is_named_first(self):
        self.log("verify: bad magic header 0, wanted acca at file /dev/userblk0 offset 1048576, "
                 "length 1048576 (requested block: offset=1048576, length=1048576)\n"
                 "crc32c: verify failed at file /dev/userblk0 offset 2097152, length 1048576\n"
                 "fio: pid=77, err=84/file:io_u.c:2247, func=io_u_sync_complete, "
                 "error=Invalid or incomplete multibyte or wide character\n")
        self.assertEqual(len(runner.verify_errors(self.dir)), 2)
        why = runner._fio_failure(self.dir, 1)
        self.assertTrue(why.startswith("DATA VERIFICATION FAILED: "), why)
        self.assertIn("offset 1048576", why)
        self.assertIn("fio exited with status 1", why)

    def test_other_failures_quote_the_tail(self):
        self.log("fio: looks like your file system does not support direct=1/buffered=0\n"
                 "fio: destination does not support O_DIRECT\n")
        self.assertEqual(runner.verify_errors(self.dir), [])
        why = runner._fio_failure(self.dir, 1)
        self.assertTrue(why.startswith("fio exited with status 1: fio: looks like"), why)


if __name__ == "__main__":
    unittest.main()
