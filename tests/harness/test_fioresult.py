"""fio JSON -> the harness's numbers, on recorded fio output."""

import copy
import json
import unittest

from helpers import fixture, fixture_path

from userblk_harness import fioresult


class FioResultTest(unittest.TestCase):
    def test_randread_qd1_uses_the_mixed_numbers(self):
        doc = fixture("fio-randread-4k-qd1.json")
        m = fioresult.metrics(doc)
        mixed = doc["jobs"][0]["mixed"]
        self.assertEqual(m["combined_from"], "mixed")
        self.assertEqual(m["iops"], mixed["iops"])
        self.assertEqual(m["ios"], mixed["total_ios"])
        self.assertAlmostEqual(m["bw_mibps"], mixed["bw_bytes"] / 1048576)
        self.assertAlmostEqual(m["lat_mean_us"], mixed["clat_ns"]["mean"] / 1000)
        self.assertEqual(m["version"], "fio-3.33")
        self.assertEqual(m["error"], 0)

    def test_total_latency_is_submission_plus_completion(self):
        doc = fixture("fio-randread-4k-qd1.json")
        mixed = doc["jobs"][0]["mixed"]
        m = fioresult.metrics(doc)
        self.assertAlmostEqual(m["lat_total_mean_us"], mixed["lat_ns"]["mean"] / 1000)
        self.assertGreaterEqual(m["lat_total_mean_us"], m["lat_mean_us"])

    def test_percentiles_are_clat_in_microseconds(self):
        doc = fixture("fio-randread-4k-qd1.json")
        pct = doc["jobs"][0]["mixed"]["clat_ns"]["percentile"]
        m = fioresult.metrics(doc)
        self.assertEqual(m["lat_p50_us"], pct["50.000000"] / 1000)
        self.assertEqual(m["lat_p99_us"], pct["99.000000"] / 1000)
        self.assertEqual(m["lat_p999_us"], pct["99.900000"] / 1000)
        self.assertLessEqual(m["lat_p50_us"], m["lat_p99_us"])
        self.assertLessEqual(m["lat_p99_us"], m["lat_p999_us"])

    def test_mixed_read_write_sums_both_directions(self):
        doc = fixture("fio-randrw70-4k-qd16.json")
        job = doc["jobs"][0]
        m = fioresult.metrics(doc)
        self.assertEqual(m["ios"], job["read"]["total_ios"] + job["write"]["total_ios"])
        self.assertAlmostEqual(m["iops"], job["read"]["iops"] + job["write"]["iops"], places=3)
        share = job["read"]["total_ios"] / m["ios"]
        self.assertTrue(0.6 < share < 0.8, share)

    def test_without_mixed_combines_directions_weighted_by_ios(self):
        doc = copy.deepcopy(fixture("fio-randrw70-4k-qd16.json"))
        job = doc["jobs"][0]
        del job["mixed"]
        m = fioresult.metrics(doc)
        r, w = job["read"], job["write"]
        self.assertEqual(m["ios"], r["total_ios"] + w["total_ios"])
        self.assertAlmostEqual(m["iops"], r["iops"] + w["iops"])
        want = ((r["clat_ns"]["mean"] * r["total_ios"] + w["clat_ns"]["mean"] * w["total_ios"])
                / (r["total_ios"] + w["total_ios"]) / 1000)
        self.assertAlmostEqual(m["lat_mean_us"], want)
        # percentiles: the larger direction's (reads, 70 %)
        self.assertEqual(m["lat_p99_us"], r["clat_ns"]["percentile"]["99.000000"] / 1000)
        self.assertIn("read+write", m["combined_from"])

    def test_two_jobs_with_group_reporting_are_one_entry(self):
        doc = fixture("fio-randread-4k-qd16-j2.json")
        self.assertEqual(len(doc["jobs"]), 1)
        m = fioresult.metrics(doc)
        self.assertEqual(m["iops"], doc["jobs"][0]["mixed"]["iops"])
        # the measured window is the per-direction runtime, not job_runtime (summed over jobs)
        self.assertEqual(m["runtime_ms"], doc["jobs"][0]["mixed"]["runtime"])
        self.assertEqual(doc["jobs"][0]["job_runtime"], 2 * m["runtime_ms"])

    def test_separate_job_entries_are_summed(self):
        one = fixture("fio-randread-4k-qd1.json")
        doc = copy.deepcopy(one)
        doc["jobs"].append(copy.deepcopy(one["jobs"][0]))
        m = fioresult.metrics(doc)
        self.assertAlmostEqual(m["iops"], 2 * one["jobs"][0]["mixed"]["iops"])
        self.assertAlmostEqual(m["lat_mean_us"], one["jobs"][0]["mixed"]["clat_ns"]["mean"] / 1000)

    def test_sequential_write_bandwidth(self):
        m = fioresult.metrics(fixture("fio-write-1m-qd4.json"))
        self.assertAlmostEqual(m["bw_mibps"], m["iops"], delta=m["iops"] * 0.01)  # 1 MiB blocks

    def test_verify_counts_the_write_and_the_read_pass(self):
        doc = fixture("fio-verify-4k-qd16.json")
        m = fioresult.metrics(doc)
        self.assertEqual(m["ios"], 2 * 2048)   # 8 MiB written and read back in 4 KiB blocks

    def test_end_time_is_the_report_time_in_seconds(self):
        doc = fixture("fio-randread-4k-qd1.json")
        self.assertEqual(fioresult.metrics(doc)["end_s"], doc["timestamp_ms"] / 1000)

    def test_text_before_the_json_is_skipped(self):
        with open(fixture_path("fio-randread-4k-qd1.json")) as f:
            text = "fio: io_uring: warning: something\n" + f.read()
        self.assertEqual(fioresult.load_text(text)["fio version"], "fio-3.33")

    def test_garbage_is_an_error(self):
        with self.assertRaises(fioresult.FioResultError):
            fioresult.load_text("fio: failed to open /dev/nope\n")
        with self.assertRaises(fioresult.FioResultError):
            fioresult.load_text('{"jobs": [')
        with self.assertRaises(fioresult.FioResultError):
            fioresult.metrics({"fio version": "fio-3.33", "jobs": []})

    def test_job_error_is_reported(self):
        doc = copy.deepcopy(fixture("fio-randread-4k-qd1.json"))
        doc["jobs"][0]["error"] = 5
        self.assertEqual(fioresult.metrics(doc)["error"], 5)

    def test_fixture_round_trip_is_untouched_json(self):
        with open(fixture_path("fio-write-1m-qd4.json")) as f:
            self.assertEqual(json.loads(f.read()), fixture("fio-write-1m-qd4.json"))


if __name__ == "__main__":
    unittest.main()
