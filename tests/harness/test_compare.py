"""harness compare: ratios of medians and flags beyond the spread."""

import os
import shutil
import tempfile
import unittest

import helpers  # noqa: F401

from userblk_harness import compare, results


def row(transport, workload, iops, lo, hi, lat, lat_lo, lat_hi, iodepth=1, status="ok"):
    r = {"transport": transport, "backend": "-", "workload": workload, "status": status,
         "iodepth": iodepth, "jobs": 1,
         "iops_median": iops, "iops_min": lo, "iops_max": hi,
         "lat_mean_us_median": lat, "lat_mean_us_min": lat_lo, "lat_mean_us_max": lat_hi,
         "lat_total_mean_us_median": lat * 2, "lat_total_mean_us_min": lat_lo * 2,
         "lat_total_mean_us_max": lat_hi * 2,
         "lat_p99_us_median": None, "lat_p99_us_min": None, "lat_p99_us_max": None,
         "cpu_us_per_io_median": 10.0, "cpu_us_per_io_min": 9.0, "cpu_us_per_io_max": 11.0}
    return (transport, "-", workload), r


class FlagTest(unittest.TestCase):
    def test_overlapping_ranges_are_not_flagged(self):
        _, a = row("x", "w", 100, 90, 110, 10, 9, 11)
        _, b = row("x", "w", 105, 100, 120, 10, 9, 11)
        self.assertEqual(compare.changed(a, b, "iops"), "")
        self.assertAlmostEqual(compare.ratio(a, b, "iops"), 1.05)

    def test_disjoint_ranges_are_flagged_with_the_direction(self):
        _, a = row("x", "w", 100, 90, 110, 10, 9, 11)
        _, b = row("x", "w", 150, 140, 160, 5, 4, 6)
        self.assertEqual(compare.changed(a, b, "iops"), "+")
        self.assertEqual(compare.changed(a, b, "lat_mean_us"), "-")

    def test_small_changes_are_not_flagged(self):
        _, a = row("x", "w", 100, 99, 101, 10, 9, 11)
        _, b = row("x", "w", 103, 102, 104, 10, 9, 11)
        self.assertEqual(compare.changed(a, b, "iops"), "+")
        self.assertEqual(compare.changed(a, b, "iops", min_change_pct=5), "")
        key = ("x", "-", "w")
        self.assertEqual(compare.compare({key: a}, {key: b})[0]["iops_flag"], "")
        self.assertEqual(compare.compare({key: a}, {key: b}, min_change_pct=0)[0]["iops_flag"],
                         "+")

    def test_missing_numbers(self):
        _, a = row("x", "w", None, None, None, 10, 9, 11, status="failed")
        _, b = row("x", "w", 150, 140, 160, 5, 4, 6)
        self.assertEqual(compare.changed(a, b, "iops"), "")
        self.assertIsNone(compare.ratio(a, b, "iops"))
        self.assertEqual(compare.changed(a, b, "lat_p99_us"), "")


class CompareTest(unittest.TestCase):
    def setUp(self):
        self.a = dict([row("copy", "randread-4k-qd1", 100, 95, 105, 50, 48, 52),
                       row("null_blk", "randread-4k-qd1", 400, 390, 410, 5, 4.8, 5.2),
                       row("copy", "randread-4k-qd32", 900, 800, 1000, 30, 28, 40, iodepth=32)])
        self.b = dict([row("copy", "randread-4k-qd1", 98, 94, 101, 51, 50, 53),
                       row("null_blk", "randread-4k-qd1", 300, 290, 310, 6, 5.9, 6.1),
                       row("copy", "randread-4k-qd32", 1000, 900, 1100, 29, 25, 33, iodepth=32),
                       row("brd", "randread-4k-qd1", 1, 1, 1, 1, 1, 1)])

    def test_cells_in_both_runs(self):
        items = compare.compare(self.a, self.b)
        self.assertEqual(len(items), 3)
        nb = next(i for i in items if i["transport"] == "null_blk")
        self.assertAlmostEqual(nb["iops_ratio"], 0.75)
        self.assertEqual(nb["iops_flag"], "-")
        self.assertEqual(nb["lat_mean_us_flag"], "+")

    def test_qd1_latency_check(self):
        items = compare.compare(self.a, self.b)
        for stem in ("lat_total_mean_us", "lat_mean_us"):
            n, worst, over = compare.qd1_latency_check(items, 10.0, stem)
            self.assertEqual((n, [i["transport"] for i in over]), (2, ["null_blk"]))
        n, worst, over = compare.qd1_latency_check(items, 10.0)
        self.assertEqual(n, 2)
        self.assertAlmostEqual(worst, 20.0)
        self.assertEqual([i["transport"] for i in over], ["null_blk"])
        n, worst, over = compare.qd1_latency_check(items, 25.0)
        self.assertEqual(over, [])

    def test_render(self):
        text = compare.render("A", "B", compare.compare(self.a, self.b),
                              {"platform": {"name": "vm", "accel": "tcg"}},
                              {"platform": {"name": "vm", "accel": "kvm"}})
        self.assertIn("warning: different platforms", text)
        self.assertIn("0.75 *-", text)
        self.assertIn("all within 10%: no: null_blk/- randread-4k-qd1 +20.0%", text)
        self.assertIn("QD1 latency (submission to completion, mean)", text)
        self.assertIn("QD1 completion latency (clat, mean)", text)
        self.assertIn("3 cells compared", text)

    def test_load_from_run_directories(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        rows = [dict(r, backend="-") for r in self.a.values()]
        results.write_atomic(os.path.join(d, "summary.csv"), results.summary_csv(rows))
        name, got, meta = compare.load(d)
        self.assertEqual(name, os.path.basename(d))
        self.assertEqual(got[("copy", "-", "randread-4k-qd1")]["iops_median"], 100)
        self.assertEqual(meta, {})
        with self.assertRaises(FileNotFoundError):
            compare.load(os.path.join(d, "nope"))


if __name__ == "__main__":
    unittest.main()
