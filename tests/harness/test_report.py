"""The table and the figure of a summary."""

import hashlib
import os
import shutil
import tempfile
import unittest

import helpers  # noqa: F401
from test_summary import cells, plan

from userblk_harness import report, results


class TableTest(unittest.TestCase):
    def setUp(self):
        self.rows = results.summarize(plan(), cells(), platform="vm", accel="tcg")

    def test_rows_ratios_and_failures(self):
        summary = {"run_id": "r1", "platform": "vm", "accel": "tcg",
                   "cells": results.count_status(cells())}
        meta = {"platform": {"kernel": "6.1.0-test"}, "tools": {"fio_version": "fio-3.33"},
                "settings": {"reps": 3}}
        text = report.table(self.rows, meta, summary)
        lines = text.splitlines()
        self.assertIn("run r1", lines[0])
        self.assertIn("vm/tcg", lines[0])
        self.assertIn("fio-3.33", lines[0])
        self.assertTrue(any(ln.startswith("randread-4k-qd1  copy") for ln in lines))
        copy = next(ln for ln in lines if "copy" in ln and "randread" in ln)
        self.assertIn("11.0k", copy)
        self.assertIn("(10.0k-12.0k)", copy)
        self.assertIn("0.26x", copy)
        self.assertIn("FAILED: userblk add failed (exit 2): unknown transport", text)
        self.assertIn("SKIPPED", text)
        self.assertIn("[2/3 reps ok]", text)
        self.assertIn("null_blk", text)
        self.assertIn("brd", text)


class TableColumnsTest(unittest.TestCase):
    """Columns shown only where some row has something to show."""

    def rows(self, **extra):
        rows = results.summarize(plan(), cells(), platform="vm", accel="tcg")
        for r in rows:
            if r["transport"] == "copy":
                r.update(extra)
        return rows

    def test_polls_names_who_spins(self):
        self.assertEqual(report.polls({"transport": "ring", "workload": "randread-4k-qd1"}), "")
        self.assertEqual(report.polls({"transport": "ring:poll-us=50",
                                       "workload": "randread-4k-qd1"}), "daemon")
        self.assertEqual(report.polls({"transport": "ring:poll-us=0",
                                       "workload": "randread-4k-qd1"}), "")
        self.assertEqual(report.polls({"transport": "null_blk",
                                       "workload": "randread-4k-qd1-hipri"}), "fio")
        self.assertEqual(report.polls({"transport": "ring:poll-queues=1:spin-us=2000",
                                       "workload": "randread-4k-qd1-hipri"}), "fio+daemon")

    def test_plain_run_has_no_server_nor_adapter_column(self):
        text = report.table(self.rows())
        self.assertIn("fio+daemon+other", text)
        self.assertNotIn("server", text)
        self.assertNotIn("adapter B/IO", text)
        self.assertIn("CPU us/MiB", text)     # write-1m-qd4 moves 1 MiB blocks
        rr = next(ln for ln in text.splitlines() if "randread" in ln and "copy" in ln)
        self.assertIn(" - ", rr)               # no CPU per MiB for 4 KiB blocks

    def test_forward_rows_show_the_server_and_the_adapter(self):
        rows = self.rows(cpu_server_us_per_io_median=7.5, adapter_bytes_per_io_median=4096.0,
                         cpu_us_per_mib_median=123.4)
        text = report.table(rows, summary={"run_id": "r", "cells": {}})
        self.assertIn("fio+daemon+server+other", text)
        self.assertIn("adapter B/IO", text)
        copy = next(ln for ln in text.splitlines() if "write-1m-qd4" in ln and "copy" in ln)
        self.assertIn("+7.5+", copy)
        self.assertIn(" 123 ", copy)
        ref = next(ln for ln in text.splitlines() if "brd" in ln and "SKIPPED" not in ln)
        self.assertIn("+-+", ref)             # references have no server

    def test_kernel_copies_show_only_where_measured(self):
        self.assertNotIn("kcopy", report.table(self.rows()))
        rows = self.rows(kernel_copy_user_bytes_per_io_median=0.0,
                         kernel_copy_kernel_bytes_per_io_median=65536.0)
        text = report.table(rows)
        self.assertIn("kcopy user+kernel B/IO", text)
        copy = next(ln for ln in text.splitlines() if "randread" in ln and "copy" in ln)
        self.assertTrue(copy.endswith("0+65536"), copy)
        ref = next(ln for ln in text.splitlines() if "null_blk" in ln and "42.0k" in ln)
        self.assertTrue(ref.endswith(" -"), ref)       # not ours: no counters

    def test_a_verification_failure_keeps_its_message(self):
        rows = self.rows()
        r = next(r for r in rows if r["transport"] == "brd")
        r["status"], r["reason"] = "failed", ("DATA VERIFICATION FAILED: the device returned "
                                              "other data than was written " + "x" * 150)
        text = report.table(rows)
        self.assertIn("FAILED: DATA VERIFICATION FAILED", text)
        self.assertIn("x" * 60, text)


class FigureTest(unittest.TestCase):
    def setUp(self):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.skipTest("matplotlib is missing (Debian package python3-matplotlib)")
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def digest(self, rows, name):
        path = os.path.join(self.dir, name)
        report.figure(rows, path, "userblk test | vm/tcg | fio-3.33")
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
        self.assertNotIn(b"Software", data)
        return hashlib.sha256(data).hexdigest()

    def test_png_is_deterministic(self):
        rows = results.summarize(plan(), cells(), platform="vm", accel="tcg")
        self.assertEqual(self.digest(rows, "a.png"), self.digest(rows, "b.png"))

    def test_without_null_blk_numbers_falls_back_to_absolute_iops(self):
        rows = [r for r in results.summarize(plan(), cells()) if r["transport"] != "null_blk"]
        self.digest(rows, "c.png")


if __name__ == "__main__":
    unittest.main()
