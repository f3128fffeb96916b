"""plots.micro and micro/micro-ratio on a small fixture of make micro's JSON:
the figure is byte-identical across runs, missing input is a skip (77), ratios are read right."""

import filecmp
import os
import shutil
import subprocess
import tempfile
import unittest

import helpers

PY = "/usr/bin/python3"
RATIO = os.path.join(helpers.TOP, "micro", "micro-ratio")

from micro import microresult  # noqa: E402 (the top of the tree: ctest runs from there)


class MicroPlotTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)

    def plot(self, src, out):
        return subprocess.run([PY, "-m", "plots.micro", src, "--out", out], capture_output=True,
                              text=True, timeout=120, cwd=helpers.TOP)

    def test_two_runs_give_identical_files(self):
        src = helpers.fixture_path("micro-host.json")
        outs = [os.path.join(self.tmp, "a"), os.path.join(self.tmp, "b")]
        for out in outs:
            r = self.plot(src, out)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for name in ("micro.png", "micro.pdf"):
            a, b = (os.path.join(o, name) for o in outs)
            self.assertGreater(os.path.getsize(a), 1000, name)
            self.assertTrue(filecmp.cmp(a, b, shallow=False), f"{name} differs between runs")

    def test_missing_input_is_a_skip(self):
        r = self.plot(os.path.join(self.tmp, "no-such-folder"), os.path.join(self.tmp, "out"))
        self.assertEqual(r.returncode, 77, r.stdout + r.stderr)
        self.assertIn("make micro", r.stdout)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "out", "micro.png")))

    def test_rows_read_from_the_counters(self):
        res = microresult.load(helpers.fixture_path("micro-host.json"))
        row = res["rows"]["uring/nop:batch32"]
        self.assertEqual(row["ops"], 32.0)
        self.assertEqual(row["repetitions"], 3)
        # ns per op is the median iteration time over the 32 operations of an iteration
        self.assertAlmostEqual(row["ns_per_op"] * 32, 1965.1, delta=1.0)
        self.assertLessEqual(row["ns_min"], row["ns_per_op"])
        self.assertEqual(res["rows"]["file/pwrite:disk/4096"]["ns_per_op"], None)
        top = [name for _, name in microresult.per_io_4k(res)]
        self.assertEqual(top[0], "wakeup/futex")
        self.assertNotIn("memcpy/65536", top)

    def test_ratio_of_a_run_with_itself_is_one(self):
        src = helpers.fixture_path("micro-host.json")
        r = subprocess.run([PY, RATIO, src, src], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith("memcpy/4096 "))
        self.assertTrue(line.rstrip().endswith("1.00"), line)


if __name__ == "__main__":
    unittest.main()
