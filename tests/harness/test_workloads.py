"""Workload names, sets and the job files they map to."""

import os
import re
import shutil
import tempfile
import unittest

import helpers  # noqa: F401

from userblk_harness import workloads


class NameTest(unittest.TestCase):
    def test_examples_from_the_issue(self):
        for name, rw, bs, qd, jobs in (("randread-4k-qd1", "randread", 4096, 1, 1),
                                       ("randread-4k-qd32", "randread", 4096, 32, 1),
                                       ("write-1m-qd4", "write", 1 << 20, 4, 1),
                                       ("randrw70-4k-qd16", "randrw", 4096, 16, 1),
                                       ("randread-4k-qd128-j2", "randread", 4096, 128, 2),
                                       ("verify-4k-qd16", "verify", 4096, 16, 1),
                                       ("read-512-qd1", "read", 512, 1, 1)):
            w = workloads.parse(name)
            self.assertEqual((w.name, w.rw, w.bs_bytes, w.iodepth, w.jobs),
                             (name, rw, bs, qd, jobs))
        self.assertEqual(workloads.parse("randrw70-4k-qd16").mix_read, 70)

    def test_canonical_spelling(self):
        self.assertEqual(workloads.parse(" RandRead-4K-QD1 ").name, "randread-4k-qd1")
        self.assertEqual(workloads.parse("randread-4k-qd1-j1").name, "randread-4k-qd1")

    def test_hipri_is_polled_io_of_random_reads_and_writes(self):
        w = workloads.parse("randread-4k-qd1-hipri")
        self.assertEqual((w.name, w.rw, w.iodepth, w.hipri), ("randread-4k-qd1-hipri",
                                                              "randread", 1, True))
        self.assertEqual(w.job()[0], workloads.parse("randread-4k-qd1").job()[0])
        self.assertEqual(w.env("/dev/x", "256M", 4, 1)["HIPRI"], "1")
        self.assertEqual(workloads.parse("randread-4k-qd1").env("/dev/x", "256M", 4, 1)["HIPRI"],
                         "0")
        self.assertEqual(workloads.parse("randwrite-4k-qd32-j2-hipri").name,
                         "randwrite-4k-qd32-j2-hipri")
        for bad in ("write-1m-qd4-hipri", "randrw70-4k-qd16-hipri", "randread-4k-qd1-hipri-j2"):
            with self.assertRaises(workloads.WorkloadError, msg=bad):
                workloads.parse(bad)

    def test_bad_names_say_what_is_expected(self):
        for bad in ("randread", "randread-4k", "rndread-4k-qd1", "randread-4x-qd1",
                    "randread-100-qd1", "randread-4k-qd0", "randread-4k-qd1-j0",
                    "randrw0-4k-qd1", "randread-32m-qd1", "randread-4k-qd1-x"):
            with self.assertRaises(workloads.WorkloadError, msg=bad) as cm:
                workloads.parse(bad)
            self.assertIn(f"bad workload name {bad!r}", str(cm.exception))

    def test_job_file_and_section(self):
        cases = {"randread-4k-qd1": ("latency.fio", "randread"),
                 "randwrite-4k-qd1": ("latency.fio", "randwrite"),
                 "randread-4k-qd32": ("scaling.fio", "randread"),
                 "randread-4k-qd1-j2": ("scaling.fio", "randread"),
                 "write-1m-qd4": ("bandwidth.fio", "write"),
                 "read-4k-qd4": ("bandwidth.fio", "read"),
                 "randrw70-4k-qd16": ("mix.fio", "randrw"),
                 "verify-4k-qd16": ("verify.fio", "verify"),
                 "write-1m-seq-verify": ("verify.fio", "write-seq")}
        for name, (job, section) in cases.items():
            path, sec = workloads.parse(name).job()
            self.assertEqual((os.path.basename(path), sec), (job, section), name)
            self.assertTrue(os.path.isfile(path))
            with open(path) as f:
                self.assertIn(f"[{section}]", f.read())

    def test_env_fills_every_variable_of_the_job_file(self):
        for name in ("randread-4k-qd1", "randread-4k-qd32-j2", "write-1m-qd4",
                     "randread-4k-qd1-hipri", "randwrite-4k-qd128-hipri",
                     "randrw70-4k-qd16", "verify-4k-qd16", "write-1m-seq-verify"):
            w = workloads.parse(name)
            env = w.env("/dev/userblk0", "256M", 4, 1)
            with open(w.job()[0]) as f:
                body = "".join(ln for ln in f if not ln.lstrip().startswith(";"))
            used = set(re.findall(r"\$\{(\w+)\}", body))
            self.assertIn("DEV", used)
            self.assertTrue(used <= set(env), f"{name}: {used - set(env)} unset")
        self.assertEqual(workloads.parse("verify-4k-qd16").env("/dev/x", "256M", 4, 1)["SIZE"],
                         workloads.VERIFY_SIZE)
        env = workloads.parse("randread-4k-qd32-j2").env("/dev/x", "256M", 4, 1)
        self.assertEqual((env["IODEPTH"], env["NUMJOBS"], env["BS"]), ("32", "2", "4k"))


class NamedWorkloadTest(unittest.TestCase):
    def test_write_1m_seq_verify_writes_the_whole_device_and_checks_it(self):
        w = workloads.parse("write-1m-seq-verify")
        self.assertEqual((w.name, w.rw, w.bs_bytes, w.iodepth, w.jobs),
                         ("write-1m-seq-verify", "verify", 1 << 20, 4, 1))
        self.assertFalse(w.time_based)
        env = w.env("/dev/x", "256M", 4, 1)
        self.assertEqual((env["SIZE"], env["BS"], env["IODEPTH"]), ("256M", "1m", "4"))
        path, section = w.job()
        with open(path) as f:
            body = f.read()
        job = body[body.index(f"[{section}]"):]
        for line in ("rw=write", "verify=crc32c", "do_verify=1", "verify_fatal=1"):
            self.assertIn(line, job.split("\n\n")[0])

    def test_named_workloads_resolve_in_lists_and_sets(self):
        ws, _, _, _ = workloads.resolve("write-1m-seq-verify,randread-4k-qd1")
        self.assertEqual([w.name for w in ws], ["write-1m-seq-verify", "randread-4k-qd1"])
        fwd = [w.name for w in workloads.load_set("forward").workloads]
        self.assertIn("write-1m-seq-verify", fwd)
        self.assertIn("write-1m-seq-verify", workloads.known_names())


class SetTest(unittest.TestCase):
    def test_sets(self):
        self.assertEqual(workloads.set_names(), ["forward", "lend", "paper", "paper-forward", "poll", "quick"])
        quick = workloads.load_set("quick")
        self.assertGreater(quick.runtime, 0)
        names = [w.name for w in quick.workloads]
        self.assertIn("randread-4k-qd1", names)
        paper = [w.name for w in workloads.load_set("paper").workloads]
        # what the figures of plots/ read: QD1 latency, the depth scan, the block-size scan
        for qd in (1, 4, 16, 32, 128):
            self.assertIn(f"randread-4k-qd{qd}", paper)
        self.assertIn("randwrite-4k-qd1", paper)
        fwd = [w.name for w in workloads.load_set("paper-forward").workloads]
        self.assertTrue({"read-1m-qd4", "write-1m-qd4"} <= set(fwd))
        self.assertTrue({"read-4k-qd4", "read-1m-qd4", "write-4k-qd4", "write-1m-qd4"}
                        <= set(paper))
        self.assertEqual(len(paper), len(set(paper)))

    def test_resolve_a_set_or_a_list(self):
        ws, runtime, ramp, name = workloads.resolve("quick")
        self.assertEqual(name, "quick")
        ws, _, _, name = workloads.resolve("randread-4k-qd1, write-1m-qd4,randread-4k-qd1")
        self.assertIsNone(name)
        self.assertEqual([w.name for w in ws], ["randread-4k-qd1", "write-1m-qd4"])

    def test_unknown_set_or_workload_lists_the_valid_ones(self):
        for bad in ("nope", "randread-4k-qd1,nope", ","):
            with self.assertRaises(workloads.WorkloadError) as cm:
                workloads.resolve(bad)
            msg = str(cm.exception)
            self.assertIn("quick", msg)
            self.assertIn("paper", msg)
            self.assertIn("randread-4k-qd1", msg)

    def test_bad_set_file(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        with open(os.path.join(d, "x.set"), "w") as f:
            f.write("runtime=3\nspeed=9\n")
        with self.assertRaises(workloads.WorkloadError):
            workloads.load_set("x", directory=d)


if __name__ == "__main__":
    unittest.main()
