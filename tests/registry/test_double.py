"""A fifth transport, registered as docs/adding-a-transport.md says, is taken up everywhere.

userblk_double is the userblk program over a registry with one more entry, `double` (a test
double in double.cpp), built by the same CMake functions as build/userblk. Its lists, its
self-description, the harness's plan and the VM suite's tests must name it, and must otherwise
be those of the real program: nothing else lists transports.
"""

import argparse
import os
import subprocess
import unittest

from userblk_harness import bench

REAL = os.environ["USERBLK_CLI"]
DOUBLE = os.environ["USERBLK_DOUBLE_CLI"]
PLANS = os.environ["USERBLK_SUITE_PLANS"]


def run(cli, *args):
    return subprocess.run([cli, *args], capture_output=True, text=True, timeout=60)


def names(cli, flag):
    r = run(cli, flag)
    if r.returncode != 0:
        raise AssertionError(f"{cli} {flag} failed: {r.stderr}")
    return [ln.split()[0] for ln in r.stdout.splitlines() if ln.strip()]


def suite_plan(which):
    with open(os.path.join(PLANS, f"suite_{which}.txt")) as f:
        return dict(ln.split() for ln in f if ln.strip())


class DoubleTest(unittest.TestCase):
    def test_the_program_lists_it_after_every_real_transport(self):
        real = names(REAL, "--list-transports")
        self.assertNotIn("double", real)
        with_double = names(DOUBLE, "--list-transports")
        self.assertIn("double", with_double)
        self.assertEqual([t for t in with_double if t != "double"], real)
        self.assertEqual(names(DOUBLE, "--list-backends"), names(REAL, "--list-backends"))

    def test_it_describes_itself_from_its_entry(self):
        r = run(DOUBLE, "--dump-transport", "double")
        self.assertEqual(r.returncode, 0, r.stderr)
        desc = dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)
        self.assertEqual(desc["name"], "double")
        self.assertEqual(desc["kind"], "userblk")
        self.assertEqual(desc["mode"], "double")
        # Past every real mode: one more than the largest a real transport has.
        real_modes = []
        for t in names(REAL, "--list-transports"):
            d = bench.describe(REAL, "transport", t)
            if d.get("kind") == "userblk":
                real_modes.append(int(d["mode_number"]))
        self.assertEqual(int(desc["mode_number"]), max(real_modes) + 1)
        self.assertEqual(desc["backend_use"], "object")
        self.assertIn("test double", desc["summary"])

    def test_the_real_program_does_not_know_it(self):
        r = run(REAL, "--dump-transport", "double")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("double", r.stderr)

    def args(self, transport):
        ap = argparse.ArgumentParser()
        bench.add_args(ap)
        a = ap.parse_args([])
        a.transport, a.backend, a.workloads, a.reps = transport, "null,ram", "quick", 1
        return a

    def test_the_harness_plans_it_by_name_and_in_all(self):
        p = bench.make_plan(self.args("double"), DOUBLE)
        measured = [(d["transport"], d["backend"], d["kind"]) for d in p["devices"]
                    if d["role"] == "measured"]
        self.assertEqual(measured, [("double", "null", "userblk"), ("double", "ram", "userblk")])
        self.assertTrue(all(c["transport"] in ("double", "null_blk", "brd") for c in p["cells"]))
        every = {d["transport"] for d in bench.make_plan(self.args("all"), DOUBLE)["devices"]}
        real = {d["transport"] for d in bench.make_plan(self.args("all"), REAL)["devices"]}
        self.assertEqual(every - real, {"double"})
        with self.assertRaisesRegex(bench.BenchError, "unknown transport 'double'"):
            bench.make_plan(self.args("double"), REAL)

    def test_the_vm_suite_gets_its_tests(self):
        real, with_double = suite_plan("real"), suite_plan("double")
        self.assertEqual(set(with_double) - set(real),
                         {"vm_suite_double", "vm_suite_double_file", "vm_suite_double_forward"})
        self.assertEqual({k: v for k, v in with_double.items() if k in real}, real)
        # A transport that does not splice runs on ram in make test and on file and forward
        # with EXTENDED=1, as copy and ring do.
        self.assertEqual(with_double["vm_suite_double"], "vm")
        self.assertEqual(with_double["vm_suite_double_file"], "vm,extended")
        self.assertEqual(with_double["vm_suite_double_forward"], "vm,extended")

    def test_the_real_plan_is_the_one_the_build_runs(self):
        r = subprocess.run(["ctest", "--test-dir", os.environ["USERBLK_BUILD"], "-N", "-R",
                            "^vm_suite_"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        listed = {w for ln in r.stdout.splitlines() for w in ln.split() if w.startswith("vm_suite_")}
        listed.discard("vm_suite_references")
        self.assertEqual(listed, set(suite_plan("real")))


if __name__ == "__main__":
    unittest.main()
