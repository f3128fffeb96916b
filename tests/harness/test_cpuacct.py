"""CPU accounting arithmetic: /proc parsing, the measured window, per-I/O numbers."""

import os
import shutil
import tempfile
import unittest

import helpers  # noqa: F401

from userblk_harness import cpuacct

PROC_STAT = """cpu  1000 10 500 8000 40 5 15 0 0 0
cpu0 500 5 250 4000 20 3 7 0 0 0
cpu1 500 5 250 4000 20 2 8 0 0 0
intr 123456 0 0
ctxt 987654
btime 1700000000
processes 4242
"""


def pid_stat(comm, utime, stime, pid=1, ppid=0):
    fields = ["S", str(ppid), "1", "1", "0", "-1", "4194304", "100", "0", "0", "0",
              str(utime), str(stime), "0", "0", "20", "0", "1", "0", "100"]
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


def sample(t, busy, idle, ctxt, procs, **roles):
    s = {"t": t, "busy_ticks": busy, "idle_ticks": idle, "ctxt": ctxt,
         "all_ticks": sum(procs.values()), "procs": procs}
    s.update(roles)
    return s


class ParseTest(unittest.TestCase):
    def test_proc_stat_busy_idle_and_context_switches(self):
        s = cpuacct.parse_proc_stat(PROC_STAT)
        self.assertEqual(s["busy_ticks"], 1000 + 10 + 500 + 5 + 15 + 0)
        self.assertEqual(s["idle_ticks"], 8000 + 40)
        self.assertEqual(s["ctxt"], 987654)

    def test_proc_stat_without_cpu_line_is_an_error(self):
        with self.assertRaises(ValueError):
            cpuacct.parse_proc_stat("ctxt 1\n")

    def test_pid_stat_is_utime_plus_stime(self):
        self.assertEqual(cpuacct.parse_pid_stat(pid_stat("fio", 120, 30)), 150)

    def test_pid_stat_with_spaces_and_parentheses_in_the_name(self):
        self.assertEqual(cpuacct.parse_pid_stat(pid_stat("a (weird) name", 7, 8)), 15)
        self.assertEqual(cpuacct.parse_pid_stat(pid_stat("x) 9 9", 7, 8).encode()), 15)


class WindowTest(unittest.TestCase):
    def test_samples_inside_fio_window(self):
        samples = [{"t": t} for t in (10.0, 10.5, 11.0, 11.5, 12.0, 12.5, 13.0)]
        first, last = cpuacct.window(samples, end_s=12.7, length_s=2.0)
        self.assertEqual((first["t"], last["t"]), (11.0, 12.5))

    def test_too_few_samples(self):
        samples = [{"t": 10.0}, {"t": 12.0}]
        self.assertIsNone(cpuacct.window(samples, end_s=11.5, length_s=1.0))
        self.assertIsNone(cpuacct.window(samples, end_s=None, length_s=1.0))


class PerIoTest(unittest.TestCase):
    def test_split_adds_up_and_leaves_the_harness_out(self):
        # 2 s apart, CLK_TCK 100: fio 120 ticks = 0.6 CPU, daemon 80 = 0.4 CPU,
        # kworker 20 = 0.1 CPU, harness 10 = 0.05 CPU (left out); 10000 IOPS
        a = sample(100.0, 1000, 5000, 50_000, {1: 0, 10: 100, 20: 50, 30: 7, 40: 3},
                   fio=100, daemon=50, harness=7)
        b = sample(102.0, 1200, 5150, 90_000, {1: 0, 10: 220, 20: 130, 30: 17, 40: 23},
                   fio=220, daemon=130, harness=17)
        m = cpuacct.per_io(a, b, iops=10_000, ncpu=2, clk_tck=100)
        self.assertAlmostEqual(m["window_s"], 2.0)
        self.assertAlmostEqual(m["cpu_fio_us_per_io"], 0.6 / 10_000 * 1e6)      # 60 us
        self.assertAlmostEqual(m["cpu_daemon_us_per_io"], 40.0)
        self.assertAlmostEqual(m["cpu_other_us_per_io"], 10.0)
        self.assertAlmostEqual(m["cpu_harness_us_per_io"], 5.0)
        self.assertAlmostEqual(m["cpu_us_per_io"], 110.0)
        self.assertAlmostEqual(m["cpu_us_per_io"], m["cpu_fio_us_per_io"]
                               + m["cpu_daemon_us_per_io"] + m["cpu_other_us_per_io"])
        self.assertAlmostEqual(m["cpu_busy_cores"], 1.1)
        self.assertAlmostEqual(m["ctxsw_per_io"], 40_000 / 2 / 10_000)
        # /proc/stat: 200 busy ticks in 2 s = 1 CPU = 100 us per I/O; 350 of 400 ticks counted
        self.assertAlmostEqual(m["cpu_stat_us_per_io"], 100.0)
        self.assertAlmostEqual(m["cpu_stat_coverage"], 350 / 400)

    def test_process_born_in_the_window_counts_from_zero(self):
        a = sample(0.0, 0, 0, 0, {10: 100}, fio=100)
        b = sample(1.0, 100, 100, 0, {10: 150, 99: 30}, fio=150)
        m = cpuacct.per_io(a, b, iops=1000, ncpu=2, clk_tck=100)
        self.assertAlmostEqual(m["cpu_other_us_per_io"], 0.3 / 1000 * 1e6)

    def test_no_daemon(self):
        a = sample(0.0, 0, 0, 0, {10: 0}, fio=0, daemon=None)
        b = sample(1.0, 100, 100, 10, {10: 50}, fio=50, daemon=None)
        m = cpuacct.per_io(a, b, iops=500, ncpu=2, clk_tck=100)
        self.assertIsNone(m["cpu_daemon_us_per_io"])
        self.assertAlmostEqual(m["cpu_other_us_per_io"], 0.0)

    def test_the_storage_server_is_split_out_of_the_rest(self):
        # nbdkit (pid 50) for the forward backend: 0.2 CPU of the 0.3 beside fio and daemon
        a = sample(0.0, 0, 0, 0, {10: 0, 20: 0, 50: 0, 60: 0}, fio=0, daemon=0, server=0)
        b = sample(1.0, 100, 100, 0, {10: 40, 20: 30, 50: 20, 60: 10},
                   fio=40, daemon=30, server=20)
        m = cpuacct.per_io(a, b, iops=1000, ncpu=2, clk_tck=100)
        self.assertAlmostEqual(m["cpu_server_us_per_io"], 200.0)
        self.assertAlmostEqual(m["cpu_other_us_per_io"], 100.0)
        self.assertAlmostEqual(m["cpu_us_per_io"], 1000.0)
        self.assertAlmostEqual(m["cpu_us_per_io"], m["cpu_fio_us_per_io"]
                               + m["cpu_daemon_us_per_io"] + m["cpu_server_us_per_io"]
                               + m["cpu_other_us_per_io"])
        without = cpuacct.per_io(sample(0.0, 0, 0, 0, {10: 0}, fio=0),
                                 sample(1.0, 0, 0, 0, {10: 10}, fio=10), iops=10, ncpu=2,
                                 clk_tck=100)
        self.assertIsNone(without["cpu_server_us_per_io"])

    def test_degenerate_inputs(self):
        a = sample(5.0, 0, 0, 0, {})
        self.assertIsNone(cpuacct.per_io(a, a, iops=100, ncpu=2))
        self.assertIsNone(cpuacct.per_io(a, sample(6.0, 0, 0, 0, {}), iops=0, ncpu=2))


class SamplerTest(unittest.TestCase):
    """The sampler on a fake /proc tree."""

    def setUp(self):
        self.proc = tempfile.mkdtemp(prefix="fakeproc-")
        self.addCleanup(shutil.rmtree, self.proc)
        with open(os.path.join(self.proc, "stat"), "w") as f:
            f.write(PROC_STAT)
        for pid, comm, u, s in ((1, "init", 5, 5), (42, "fio", 300, 200), (43, "userblk", 10, 90)):
            self.write_pid(pid, comm, u, s)
        os.makedirs(os.path.join(self.proc, "self"))

    def write_pid(self, pid, comm, u, s, ppid=0):
        d = os.path.join(self.proc, str(pid))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "stat"), "w") as f:
            f.write(pid_stat(comm, u, s, pid, ppid))

    def test_roles_and_totals(self):
        s = cpuacct.Sampler({"fio": 42, "daemon": 43, "harness": 7}, proc=self.proc)
        try:
            x = s.sample()
            self.assertEqual(x["fio"], 500)
            self.assertEqual(x["daemon"], 100)
            self.assertIsNone(x["harness"])
            self.assertEqual(x["all_ticks"], 610)
            self.assertEqual(x["ctxt"], 987654)
            self.write_pid(42, "fio", 400, 250)     # rewritten in place: the open fd re-reads
            shutil.rmtree(os.path.join(self.proc, "43"))
            y = s.sample()
            self.assertEqual(y["fio"], 650)
            self.assertIsNone(y["daemon"])
            self.assertEqual(y["all_ticks"], 660)
        finally:
            s.close()

    def test_the_daemon_counts_its_children_and_fio_only_itself(self):
        # userblk add (43) started nbdkit (44), which has a child (45); fio (42) has a child
        # process (46) that is not fio's: only the daemon's role is a tree.
        self.write_pid(44, "nbdkit", 70, 30, ppid=43)
        self.write_pid(45, "nbdkit", 5, 5, ppid=44)
        self.write_pid(46, "sh", 1, 1, ppid=42)
        s = cpuacct.Sampler({"fio": 42, "daemon": 43}, proc=self.proc)
        try:
            x = s.sample()
            self.assertEqual(x["daemon"], 100 + 100 + 10)
            self.assertEqual(x["fio"], 500)
            shutil.rmtree(os.path.join(self.proc, "45"))
            self.assertEqual(s.sample()["daemon"], 200)
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
