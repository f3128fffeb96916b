"""The figures and the paper's numbers from the committed reference results.

Every plots/*.py draws from results/reference twice into two folders, and the files are
byte-identical; each figure exists as PNG and PDF. paper/numbers.tex matches what
paper/macros.py computes from results/reference and every \\N{key} of the text exists.
harness/harness publish gives the same bytes twice and refuses an unfinished run.
"""

import filecmp
import glob
import json
import os
import shutil
import subprocess
import tempfile
import unittest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = "/usr/bin/python3"
REFERENCE = os.path.join(TOP, "results", "reference")
# Each figure is the module plots.NAME, run from the top of the tree.
FIGURES = sorted("plots." + os.path.basename(f)[:-3]
                 for f in glob.glob(os.path.join(TOP, "plots", "*.py"))
                 if not os.path.basename(f).startswith("_"))
# The figures the paper includes, each from one script.
PAPER_FIGURES = ("latency", "scaling", "bandwidth", "cpu", "cdf", "forward", "micro")


def run(args, **kw):
    return subprocess.run([PY] + args, capture_output=True, text=True, timeout=300, cwd=TOP,
                          **kw)


class FiguresTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)

    def test_every_figure_twice_byte_identical(self):
        outs = [os.path.join(self.tmp, "a"), os.path.join(self.tmp, "b")]
        for out in outs:
            for script in FIGURES:
                r = run(["-m", script, REFERENCE, "--out", out])
                # A figure of an experiment the reference results do not hold (make slots)
                # skips; the paper's figures never do.
                ok = (0,) if script[len("plots."):] in PAPER_FIGURES else (0, 77)
                self.assertIn(r.returncode, ok, f"{script}: {r.stdout}{r.stderr}")
        for name in PAPER_FIGURES:
            for ext in ("png", "pdf"):
                a, b = (os.path.join(o, f"{name}.{ext}") for o in outs)
                self.assertTrue(os.path.exists(a), f"{name}.{ext} not drawn")
                self.assertGreater(os.path.getsize(a), 5000, f"{name}.{ext}")
                self.assertTrue(filecmp.cmp(a, b, shallow=False),
                                f"{name}.{ext} differs between two runs")

    def test_paper_includes_every_figure(self):
        text = ""
        for f in glob.glob(os.path.join(TOP, "paper", "**", "*.tex"), recursive=True):
            with open(f) as fh:
                text += fh.read()
        for name in PAPER_FIGURES:
            self.assertIn(f"\\includegraphics[width=\\linewidth]{{{name}}}", text.replace(
                "\\columnwidth", "\\linewidth").replace("\\textwidth", "\\linewidth"), name)

    def test_missing_results_is_a_skip(self):
        empty = os.path.join(self.tmp, "empty")
        os.makedirs(empty)
        for script in FIGURES:
            r = run(["-m", script, empty, "--out", os.path.join(self.tmp, "out")])
            self.assertEqual(r.returncode, 77, f"{script}: {r.stdout}{r.stderr}")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "out", "latency.png")))

    def test_a_run_without_the_figures_workloads_is_a_skip(self):
        run_dir = os.path.join(self.tmp, "run")
        os.makedirs(run_dir)
        with open(os.path.join(run_dir, "summary.json"), "w") as f:
            json.dump({"run_id": "x", "rows": [], "platform": "vm", "accel": "tcg"}, f)
        r = run(["-m", "plots.latency", run_dir, "--out", self.tmp])
        self.assertEqual(r.returncode, 77, r.stdout + r.stderr)
        self.assertIn("skipped", r.stdout)


class SlotsFigureTest(unittest.TestCase):
    def test_draws_the_variants_that_set_their_geometry(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        rows = []
        for base in ("pipe", "splice"):
            for q, d in ((1, 64), (2, 128), (4, 256)):
                row = {"transport": f"{base}:queues={q}:depth={d}", "backend": "ram",
                       "workload": "randread-4k-qd64-j2", "reps": 5, "reps_planned": 5,
                       "status": "ok", "kind": "userblk"}
                for metric, v in (("setup_s", 0.01 * q * d), ("daemon_fds", 2 * q * d + q),
                                  ("kernel_slab_setup_kib", 10.0 * q * d),
                                  ("kernel_mem_loaded_kib", 14.0 * q * d), ("iops", 9000.0)):
                    row.update({f"{metric}_median": v, f"{metric}_min": v * 0.9,
                                f"{metric}_max": v * 1.1})
                rows.append(row)
        rows.append({"transport": "ring", "backend": "ram", "workload": "randread-4k-qd64-j2",
                     "reps": 5, "status": "ok", "iops_median": 1.0})
        run_dir = os.path.join(tmp, "run")
        os.makedirs(run_dir)
        with open(os.path.join(run_dir, "summary.json"), "w") as f:
            json.dump({"run_id": "slots", "rows": rows, "platform": "vm", "accel": "kvm"}, f)
        r = run(["-m", "plots.slots", run_dir, "--out", tmp])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertGreater(os.path.getsize(os.path.join(tmp, "slots.png")), 5000)
        self.assertTrue(os.path.exists(os.path.join(tmp, "slots.pdf")))


class NumbersTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)

    def check(self, numbers_tex):
        return run(["-m", "paper.macros", REFERENCE, "--check", numbers_tex])

    def test_numbers_tex_matches_the_reference(self):
        r = self.check(os.path.join(TOP, "paper", "numbers.tex"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_a_changed_number_fails_the_check(self):
        with open(os.path.join(TOP, "paper", "numbers.tex")) as f:
            text = f.read()
        line = next(ln for ln in text.splitlines() if "ubn@lat." in ln)
        changed = os.path.join(self.tmp, "numbers.tex")
        with open(changed, "w") as f:
            f.write(text.replace(line, line[:-1] + "9}"))
        r = self.check(changed)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("does not match", r.stderr)

    def test_quoted_keys_are_found_outside_comments_only(self):
        from paper import macros  # the top of the tree: ctest runs from there
        tex = os.path.join(self.tmp, "t.tex")
        with open(tex, "w") as f:
            f.write("a 50\\% share, \\N{no.such.key} % and \\N{hidden.in.a.comment}\n")
        macros.TEXT, macros.SECTIONS = [tex], os.path.join(self.tmp, "none")
        used = macros.used_keys()
        self.assertEqual(list(used), ["no.such.key"])

    def test_the_claims_of_the_text_hold(self):
        r = run(["-m", "paper.macros", REFERENCE, "--list"])
        self.assertEqual(r.returncode, 0, r.stderr)
        keys = {ln.split(" = ", 1)[0]: ln.split(" = ", 1)[1] for ln in r.stdout.splitlines()}
        for q in ("qdonelat", "iops", "cpu", "fwdw1mqd4"):
            for k in (f"win.{q}", f"win.{q}.vsublk", f"win.{q}.vsnbd"):
                self.assertIn(k, keys)


class PublishTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)

    def publish(self, *args):
        return run([os.path.join("harness", "harness"), "publish"] + list(args))

    def source_run(self):
        """A published run read back as a plain run: decompressed into a source folder."""
        run_dir = sorted(glob.glob(os.path.join(REFERENCE, "runs", "*")))[-1]
        src = os.path.join(self.tmp, "src", os.path.basename(run_dir))
        shutil.copytree(run_dir, src)
        for gz in glob.glob(os.path.join(src, "**", "*.gz"), recursive=True):
            subprocess.run(["gunzip", "-f", gz], check=True)
        return run_dir, src

    def test_publish_is_deterministic(self):
        run_dir, src = self.source_run()
        outs = [os.path.join(self.tmp, "p1"), os.path.join(self.tmp, "p2")]
        for out in outs:
            r = self.publish(src, "--to", out)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        cmp = filecmp.dircmp(*outs)
        self.assertEqual(cmp.diff_files + cmp.left_only + cmp.right_only, [])
        a = os.path.join(outs[0], "runs", os.path.basename(run_dir))
        self.assertTrue(filecmp.cmp(os.path.join(a, "summary.json"),
                                    os.path.join(run_dir, "summary.json"), shallow=False))
        fio = glob.glob(os.path.join(a, "cells", "*", "*", "*", "rep1", "fio.json.gz"))
        self.assertTrue(fio)
        with open(fio[0], "rb") as f:
            self.assertEqual(f.read()[4:8], b"\0\0\0\0")  # gzip mtime 0
        # a published run published again keeps its compressed files
        again = os.path.join(self.tmp, "again")
        shutil.copytree(a, again)
        with open(os.path.join(outs[1], "README.md"), "w") as f:
            f.write("a reference\n")  # what makes a folder a reference publish may replace
        r = self.publish(again, "--to", outs[1])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(len(glob.glob(os.path.join(outs[1], "**", "*.gz"), recursive=True)),
                         len(glob.glob(os.path.join(a, "**", "*.gz"), recursive=True)))

    def test_refusals_leave_the_reference_as_it_was(self):
        _, src = self.source_run()
        ref = os.path.join(self.tmp, "ref")
        r = self.publish(src, "--to", ref)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(os.path.join(ref, "README.md"), "w") as f:
            f.write("reference\n")
        before = sorted(glob.glob(os.path.join(ref, "**"), recursive=True))
        # a run with a failed row
        with open(os.path.join(src, "summary.json")) as f:
            summary = json.load(f)
        summary["rows"][0]["status"] = "failed"
        bad = os.path.join(self.tmp, "bad")
        shutil.copytree(src, bad)
        with open(os.path.join(bad, "summary.json"), "w") as f:
            json.dump(summary, f)
        r = self.publish(bad, "--to", ref)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("1 rows failed", r.stderr)
        # a source inside the reference it would replace
        inside = glob.glob(os.path.join(ref, "runs", "*"))[0]
        r = self.publish(inside, "--to", ref)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("inside", r.stderr)
        # a folder that is not a reference (results/ with everyone's runs)
        other = os.path.join(self.tmp, "results")
        os.makedirs(os.path.join(other, "runs", "mine"))
        r = self.publish(src, "--to", other)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertTrue(os.path.isdir(os.path.join(other, "runs", "mine")))
        # too large
        r = self.publish(src, "--to", ref, "--max-mib", "0.01")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertEqual(sorted(glob.glob(os.path.join(ref, "**"), recursive=True)), before)


if __name__ == "__main__":
    unittest.main()
