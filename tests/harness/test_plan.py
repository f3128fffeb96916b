"""Planning a run from the CLI's lists, and bad input that must list the valid choices."""

import argparse
import os
import shutil
import stat
import tempfile
import unittest

import helpers  # noqa: F401

from userblk_harness import bench, results

FAKE_CLI = """#!/bin/sh
# A stand-in for build/userblk's self-descriptions.
case "$1" in
--list-transports) printf 'copy\\nring\\nnull_blk\\nnbdkit\\n' ;;
--list-backends) printf 'null\\nram\\nfile\\n' ;;
--dump-transport)
	case "$2" in
	null_blk|brd) printf 'name=%s\\nkind=reference\\nbackend_use=none\\n' "$2" ;;
	nbdkit) printf 'name=nbdkit\\nkind=reference\\nbackend_use=own\\nbackends=null,ram\\ndelete=userblk del --transport <name> <N>\\n' ;;
	copy|ring) printf 'name=%s\\nkind=userblk\\nbackend_use=object\\n' "$2" ;;
	*) echo "userblk: unknown transport '$2'" >&2; exit 2 ;;
	esac ;;
--dump-backend)
	case "$2" in
	null) printf 'name=null\\nstorage=none\\noptions=fill\\n' ;;
	ram) printf 'name=ram\\nstorage=anonymous memory\\noptions=\\n' ;;
	*) printf 'name=%s\\nstorage=anonymous memory\\n' "$2" ;;
	esac ;;
*) exit 2 ;;
esac
"""


class PlanTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.cli = os.path.join(self.dir, "userblk")
        with open(self.cli, "w") as f:
            f.write(FAKE_CLI)
        os.chmod(self.cli, stat.S_IRWXU)

    def args(self, **kw):
        ap = argparse.ArgumentParser()
        bench.add_args(ap)
        a = ap.parse_args([])
        a.transport, a.backend, a.workloads, a.reps, a.queues = "copy", "null,ram", "quick", 3, 2
        for k, v in kw.items():
            setattr(a, k, v)
        return a

    def test_default_plan_has_the_references_and_every_cell(self):
        p = bench.make_plan(self.args(), self.cli)
        devs = [(d["transport"], d["backend"], d["kind"], d["role"]) for d in p["devices"]]
        self.assertEqual(devs, [("copy", "null", "userblk", "measured"),
                                ("copy", "ram", "userblk", "measured"),
                                ("null_blk", "-", "reference", "reference"),
                                ("brd", "-", "reference", "reference")])
        n_w = len(p["workloads"])
        self.assertEqual(len(p["cells"]), 4 * n_w * 3)
        self.assertEqual([c["index"] for c in p["cells"]], list(range(1, len(p["cells"]) + 1)))
        # repetition-major order: every device and workload once before the next repetition
        self.assertEqual({c["rep"] for c in p["cells"][:4 * n_w]}, {1})
        stores = {(d["transport"], d["backend"]): d["stores_data"] for d in p["devices"]}
        self.assertEqual(stores, {("copy", "null"): False, ("copy", "ram"): True,
                                  ("null_blk", "-"): False, ("brd", "-"): True})
        self.assertEqual(p["settings"]["size_bytes"], 256 << 20)

    def test_all_and_lists(self):
        p = bench.make_plan(self.args(transport="all", backend="ram",
                                      workloads="randread-4k-qd1", reps=1), self.cli)
        self.assertEqual([(d["transport"], d["backend"]) for d in p["devices"]],
                         [("copy", "ram"), ("ring", "ram"), ("nbdkit", "ram"), ("null_blk", "-"),
                          ("brd", "-")])
        self.assertEqual(len(p["cells"]), 5)
        # nbdkit serves null and ram only: with file alone it has no row under "all"
        p = bench.make_plan(self.args(transport="all", backend="null,file",
                                      workloads="randread-4k-qd1", reps=1), self.cli)
        self.assertEqual([(d["transport"], d["backend"]) for d in p["devices"]
                          if d["transport"] == "nbdkit"], [("nbdkit", "null")])

    def test_a_reference_with_its_own_backends_runs_on_the_wanted_ones(self):
        p = bench.make_plan(self.args(transport="nbdkit,copy", backend="null,ram"), self.cli)
        rows = {(d["transport"], d["backend"]): (d["kind"], d["role"], d["stores_data"],
                                                  d["deletable"]) for d in p["devices"]}
        self.assertEqual(rows[("nbdkit", "null")], ("reference", "measured", False, True))
        self.assertEqual(rows[("nbdkit", "ram")], ("reference", "measured", True, True))
        self.assertEqual(rows[("copy", "ram")], ("userblk", "measured", True, True))
        self.assertEqual(rows[("null_blk", "-")][3], False)
        with self.assertRaises(bench.BenchError) as cm:
            bench.make_plan(self.args(transport="nbdkit", backend="file"), self.cli)
        self.assertIn("nbdkit serves only the backends null, ram", str(cm.exception))

    def test_unknown_transport_lists_the_valid_ones(self):
        with self.assertRaises(bench.BenchError) as cm:
            bench.make_plan(self.args(transport="splice"), self.cli)
        msg = str(cm.exception)
        self.assertIn("unknown transport 'splice'", msg)
        for name in ("copy", "ring", "null_blk", "brd", "all"):
            self.assertIn(name, msg)

    def test_variants_keep_their_name_and_pass_their_options(self):
        p = bench.make_plan(self.args(transport="ring,ring:poll-us=50", backend="null",
                                      workloads="randread-4k-qd1", reps=1), self.cli)
        devs = [(d["transport"], d["base"], d["options"]) for d in p["devices"]][:2]
        self.assertEqual(devs, [("ring", "ring", []),
                                ("ring:poll-us=50", "ring", ["--poll-us", "50"])])
        for bad in ("ring:poll-us", "ring:=5", "warp:poll-us=5"):
            with self.assertRaises(bench.BenchError, msg=bad):
                bench.make_plan(self.args(transport=bad), self.cli)

    def test_backend_variants_are_rows_of_their_own(self):
        p = bench.make_plan(self.args(transport="copy", backend="file,file:direct=1",
                                      workloads="randread-4k-qd1", reps=1), self.cli)
        self.assertEqual([d["backend"] for d in p["devices"] if d["transport"] == "copy"],
                         ["file", "file:direct=1"])
        for bad in ("disk:direct=1", "file:direct"):
            with self.assertRaises(bench.BenchError, msg=bad):
                bench.make_plan(self.args(transport="copy", backend=bad), self.cli)

    def test_no_transport_says_how_to_give_one(self):
        with self.assertRaises(bench.BenchError) as cm:
            bench.make_plan(self.args(transport=""), self.cli)
        self.assertIn("TRANSPORT=", str(cm.exception))

    def test_unknown_backend_lists_the_valid_ones(self):
        with self.assertRaises(bench.BenchError) as cm:
            bench.make_plan(self.args(backend="ram,disk"), self.cli)
        self.assertIn("unknown backend 'disk'; valid backends: null, ram, file", str(cm.exception))

    def test_a_backend_variant_takes_only_the_options_its_backend_lists(self):
        p = bench.make_plan(self.args(backend="null:fill=none"), self.cli)
        self.assertIn(("copy", "null:fill=none"),
                      [(d["transport"], d["backend"]) for d in p["devices"]])
        with self.assertRaises(bench.BenchError) as cm:
            bench.make_plan(self.args(backend="ram:fill=none"), self.cli)
        self.assertIn("backend variant 'ram:fill=none': ram takes no options, not fill",
                      str(cm.exception))
        with self.assertRaises(bench.BenchError) as cm:
            bench.make_plan(self.args(backend="null:fil=none"), self.cli)
        self.assertIn("null takes the options fill, not fil", str(cm.exception))

    def test_unknown_workload_lists_the_sets(self):
        with self.assertRaises(bench.BenchError) as cm:
            bench.make_plan(self.args(workloads="fast"), self.cli)
        self.assertIn("quick", str(cm.exception))

    def test_bad_reps_and_size(self):
        with self.assertRaises(bench.BenchError):
            bench.make_plan(self.args(reps=0), self.cli)
        with self.assertRaises(bench.BenchError):
            bench.make_plan(self.args(size="lots"), self.cli)

    def test_missing_cli_is_an_error_that_says_make_build(self):
        with self.assertRaises(bench.BenchError) as cm:
            bench.make_plan(self.args(), os.path.join(self.dir, "nope"))
        self.assertIn("make build", str(cm.exception))

    def test_missing_tool_names_its_package(self):
        old = bench.TOOLS
        bench.TOOLS = {"surely-not-installed-tool": "some-package"}
        try:
            with self.assertRaises(bench.BenchError) as cm:
                bench.check_tools("native")
            self.assertIn("surely-not-installed-tool (Debian package some-package)",
                          str(cm.exception))
        finally:
            bench.TOOLS = old

    def test_cell_directories(self):
        d = results.cell_dir("/r", "null_blk", "-", "randread-4k-qd1", 2)
        self.assertEqual(d, "/r/cells/null_blk/none/randread-4k-qd1/rep2")


if __name__ == "__main__":
    unittest.main()
