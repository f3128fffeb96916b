"""Summary arithmetic (medians, min/max, status, ratios), summary.csv, daemon statistics."""

import csv
import io
import os
import shutil
import tempfile
import unittest

from helpers import fixture

from userblk_harness import daemonstats, results

REQUIRED_COLUMNS = (
    "transport", "backend", "workload", "reps", "status", "iops_median", "iops_min",
    "iops_max", "bw_mibps_median", "lat_mean_us_median", "lat_p50_us_median",
    "lat_p99_us_median", "lat_p999_us_median", "cpu_us_per_io_median",
    "cpu_fio_us_per_io_median", "cpu_daemon_us_per_io_median", "cpu_other_us_per_io_median",
    "ctxsw_per_io_median", "user_bytes_per_io_median")


def plan():
    devices = [{"transport": "copy", "backend": "null", "kind": "userblk"},
               {"transport": "null_blk", "backend": "-", "kind": "reference"},
               {"transport": "brd", "backend": "-", "kind": "reference"}]
    workloads = [{"name": "randread-4k-qd1", "rw": "randread", "bs_bytes": 4096, "iodepth": 1,
                  "jobs": 1},
                 {"name": "write-1m-qd4", "rw": "write", "bs_bytes": 1 << 20, "iodepth": 4,
                  "jobs": 1}]
    cells = []
    for rep in (1, 2, 3):
        for w in workloads:
            for d in devices:
                cells.append({"index": len(cells) + 1, "transport": d["transport"],
                              "backend": d["backend"], "workload": w["name"], "rep": rep,
                              "dir": f"cells/{d['transport']}/{w['name']}/rep{rep}"})
    return {"run_id": "test", "platform": "vm", "devices": devices, "workloads": workloads,
            "cells": cells, "settings": {"runtime_s": 4, "ramp_s": 1, "queues": 2,
                                         "depth": 128, "size_bytes": 1 << 28, "reps": 3}}


def cell(transport, backend, workload, rep, status="ok", reason=None, **metrics):
    return {"transport": transport, "backend": backend, "workload": workload, "rep": rep,
            "status": status, "reason": reason, "metrics": metrics,
            "device": {"queue": {"max_sectors_kb": 127, "nr_requests": 128,
                                 "scheduler": "none", "nr_hw_queues": 2}}}


def cells():
    out = []
    iops = {"copy": (10_000.0, 12_000.0, 11_000.0), "null_blk": (40_000.0, 44_000.0, 42_000.0),
            "brd": (30_000.0, 31_000.0, 29_000.0)}
    for t, b in (("copy", "null"), ("null_blk", "-"), ("brd", "-")):
        for rep in (1, 2, 3):
            v = iops[t][rep - 1]
            out.append(cell(t, b, "randread-4k-qd1", rep, iops=v, lat_mean_us=1e6 / v,
                            cpu_us_per_io=50.0 + rep, cpu_fio_us_per_io=20.0,
                            cpu_daemon_us_per_io=25.0 if t == "copy" else 0.0,
                            cpu_other_us_per_io=5.0 + rep, ctxsw_per_io=2.0,
                            user_bytes_per_io=4096.0 if t == "copy" else None))
    # write-1m-qd4: copy fails once, null_blk fails always, brd skipped
    out.append(cell("copy", "null", "write-1m-qd4", 1, iops=200.0, bw_mibps=200.0))
    out.append(cell("copy", "null", "write-1m-qd4", 2, status="failed",
                    reason="the daemon (userblk add, pid 9) was killed by SIGSEGV"))
    out.append(cell("copy", "null", "write-1m-qd4", 3, iops=300.0, bw_mibps=300.0))
    for rep in (1, 2, 3):
        out.append(cell("null_blk", "-", "write-1m-qd4", rep, status="failed",
                        reason="userblk add failed (exit 2): unknown transport 'null_blk'"))
        out.append(cell("brd", "-", "write-1m-qd4", rep, status="skipped", reason="why not"))
    return out


class SpreadTest(unittest.TestCase):
    def test_median_min_max(self):
        self.assertEqual(results.spread([3.0, 1.0, 2.0]), (2.0, 1.0, 3.0))
        self.assertEqual(results.spread([4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0))
        self.assertEqual(results.spread([None, 5.0]), (5.0, 5.0, 5.0))
        self.assertEqual(results.spread([]), (None, None, None))
        self.assertEqual(results.spread([None]), (None, None, None))


class SummarizeTest(unittest.TestCase):
    def setUp(self):
        self.rows = results.summarize(plan(), cells(), platform="vm", accel="tcg")
        self.by = {(r["transport"], r["workload"]): r for r in self.rows}

    def test_one_row_per_device_and_workload_in_plan_order(self):
        self.assertEqual([(r["workload"], r["transport"]) for r in self.rows], [
            ("randread-4k-qd1", "copy"), ("randread-4k-qd1", "null_blk"),
            ("randread-4k-qd1", "brd"), ("write-1m-qd4", "copy"),
            ("write-1m-qd4", "null_blk"), ("write-1m-qd4", "brd")])

    def test_medians_and_spread_over_repetitions(self):
        r = self.by[("copy", "randread-4k-qd1")]
        self.assertEqual((r["iops_median"], r["iops_min"], r["iops_max"]),
                         (11_000.0, 10_000.0, 12_000.0))
        self.assertEqual(r["cpu_us_per_io_median"], 52.0)
        self.assertEqual(r["cpu_other_us_per_io_median"], 7.0)
        self.assertEqual(r["user_bytes_per_io_median"], 4096.0)
        self.assertEqual((r["reps"], r["reps_planned"], r["status"]), (3, 3, "ok"))
        self.assertEqual((r["max_sectors_kb"], r["nr_requests"], r["scheduler"]),
                         (127, 128, "none"))
        self.assertEqual((r["platform"], r["accel"]), ("vm", "tcg"))

    def test_ratio_to_null_blk_of_the_same_workload(self):
        self.assertAlmostEqual(self.by[("copy", "randread-4k-qd1")]["iops_vs_null_blk"],
                               11_000 / 42_000)
        self.assertEqual(self.by[("null_blk", "randread-4k-qd1")]["iops_vs_null_blk"], 1.0)
        self.assertIsNone(self.by[("copy", "write-1m-qd4")]["iops_vs_null_blk"])

    def test_reference_rows_have_no_user_bytes(self):
        self.assertIsNone(self.by[("null_blk", "randread-4k-qd1")]["user_bytes_per_io_median"])
        self.assertEqual(self.by[("brd", "randread-4k-qd1")]["cpu_daemon_us_per_io_median"], 0.0)

    def test_partial_failed_skipped(self):
        r = self.by[("copy", "write-1m-qd4")]
        self.assertEqual((r["status"], r["reps"], r["reps_failed"]), ("partial", 2, 1))
        self.assertEqual(r["iops_median"], 250.0)
        self.assertIn("SIGSEGV", r["reason"])
        r = self.by[("null_blk", "write-1m-qd4")]
        self.assertEqual((r["status"], r["reps"]), ("failed", 0))
        self.assertIsNone(r["iops_median"])
        self.assertIn("unknown transport", r["reason"])
        self.assertEqual(self.by[("brd", "write-1m-qd4")]["status"], "skipped")

    def test_missing_cells(self):
        p = plan()
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        recs = results.load_cells(d, p)
        self.assertTrue(all(c["status"] == "missing" for c in recs))
        rows = results.summarize(p, recs)
        self.assertTrue(all(r["status"] == "missing" for r in rows))
        self.assertIn("resume", rows[0]["reason"])


class CsvTest(unittest.TestCase):
    def setUp(self):
        self.rows = results.summarize(plan(), cells(), platform="vm", accel="tcg")
        self.text = results.summary_csv(self.rows)

    def test_required_columns_are_present_with_their_names(self):
        header = next(csv.reader(io.StringIO(self.text)))
        for c in REQUIRED_COLUMNS:
            self.assertIn(c, header)
        self.assertEqual(header[:5], ["transport", "backend", "workload", "reps", "status"])
        self.assertEqual(len(header), len(set(header)))

    def test_values_unrounded_and_empty_for_none(self):
        got = list(csv.DictReader(io.StringIO(self.text)))
        copy = got[0]
        self.assertEqual(float(copy["iops_vs_null_blk"]), 11_000 / 42_000)
        self.assertEqual(got[1]["user_bytes_per_io_median"], "")
        self.assertEqual(got[1]["backend"], "-")
        self.assertEqual(len(got), 6)

    def test_read_back(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        summary = results.write_summary(d, plan(), cells(), "vm", "tcg")
        self.assertEqual(len(summary), 6)
        back = results.read_summary_csv(os.path.join(d, "summary.csv"))
        self.assertEqual(back[0]["iops_median"], 11_000)
        self.assertIsNone(back[1]["user_bytes_per_io_median"])
        doc = results.read_json(os.path.join(d, "summary.json"))
        self.assertEqual(doc["cells"], {"planned": 18, "ok": 11, "failed": 4, "skipped": 3,
                                        "missing": 0})
        self.assertEqual(doc["columns"], results.columns())
        self.assertEqual([n for n in os.listdir(d) if n.startswith(".tmp")], [])

    def test_atomic_write_leaves_the_old_file_on_failure(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        path = os.path.join(d, "x.json")
        results.write_json(path, {"a": 1})
        with self.assertRaises(TypeError):
            results.write_json(path, {"a": object()})
        self.assertEqual(results.read_json(path), {"a": 1})
        self.assertEqual(sorted(os.listdir(d)), ["x.json"])


class DaemonStatsTest(unittest.TestCase):
    def delta(self):
        return daemonstats.delta(fixture("userblk-stats-before.json"),
                                 fixture("userblk-stats-after.json"))

    def test_delta(self):
        d = self.delta()
        self.assertEqual(d["requests.total"], 60_000)
        self.assertEqual(d["bytes.total"], 60_000 * 4096)
        self.assertEqual(d["user_data_bytes"], 245_760_000)
        self.assertNotIn("request_batches.max", d)

    def test_per_io_4k(self):
        m = daemonstats.per_io(self.delta(), bytes_per_io=4096)
        self.assertEqual(m["user_bytes_per_io"], 4096.0)
        self.assertEqual(m["daemon_requests_per_io"], 1.0)
        self.assertEqual(m["daemon_syscalls_per_request"], 2.0)
        self.assertEqual(m["adapter_copied_bytes_per_request"], 0.0)
        self.assertAlmostEqual(m["daemon_requests_per_batch"], 1.2)

    def test_a_large_io_split_into_requests_counts_per_io(self):
        # the same requests seen from fio issuing 8 KiB I/Os: two requests each
        m = daemonstats.per_io(self.delta(), bytes_per_io=8192)
        self.assertEqual(m["user_bytes_per_io"], 8192.0)
        self.assertEqual(m["daemon_requests_per_io"], 2.0)

    def test_statistics_without_user_data_bytes(self):
        after = fixture("userblk-stats-after.json")
        del after["total"]["user_data_bytes"]
        m = daemonstats.per_io(daemonstats.delta(fixture("userblk-stats-before.json"), after),
                               bytes_per_io=4096)
        self.assertIsNone(m["user_bytes_per_io"])
        self.assertEqual(m["daemon_syscalls_per_request"], 2.0)

    def test_bytes_through_the_adapter_and_data_syscalls(self):
        after = fixture("userblk-stats-after.json")
        after["total"]["adapter_copied_bytes"] += 60_000 * 2048
        after["total"]["syscalls"]["data"] = after["total"]["syscalls"].get("data", 0) + 60_000
        m = daemonstats.per_io(daemonstats.delta(fixture("userblk-stats-before.json"), after),
                               bytes_per_io=4096)
        self.assertEqual(m["adapter_bytes_per_io"], 2048.0)
        self.assertEqual(m["adapter_copied_bytes"], 60_000 * 2048)
        self.assertEqual(m["user_data_bytes"], 245_760_000)
        self.assertEqual(m["daemon_syscalls_per_request"], 3.0)

    def test_no_requests(self):
        snap = fixture("userblk-stats-before.json")
        m = daemonstats.per_io(daemonstats.delta(snap, snap), bytes_per_io=4096)
        self.assertIsNone(m["user_bytes_per_io"])
        self.assertEqual(m["daemon_requests"], 0)


if __name__ == "__main__":
    unittest.main()
