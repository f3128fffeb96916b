#!/usr/bin/python3
"""The generic kernel-in-the-loop suite: one body for every registered transport.

Runs inside the platform (the VM or a native host), as root:

    harness/platform run -- tests/vm/suite.py --transport copy [-k PATTERN]

Every test writes a marker into the kernel log first and fails if WARNING:,
BUG:, Oops, a hung task or KASAN appears after it. Exit status: 0 pass,
1 fail, 77 skip (with the reason printed).
"""

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("USERBLK_BUILD", os.path.join(TOP, "build"))
USERBLK = os.path.join(BUILD, "userblk")
BADINPUT = os.path.join(BUILD, "tests", "vm", "userblk_badinput_test")
CONTROL = "/dev/userblk-control"

sys.path.insert(0, os.path.join(TOP, "harness"))
from userblk_harness import dmesg  # noqa: E402


def run(argv, timeout=300, check=True, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def kmsg(line):
    with open("/dev/kmsg", "w") as f:
        f.write(line + "\n")


def load_module():
    """Load userblk.ko from USERBLK_KMOD_DIR unless it is loaded already."""
    if os.path.exists(CONTROL):
        return False
    ko = os.path.join(os.environ.get("USERBLK_KMOD_DIR", ""), "userblk.ko")
    if not os.path.isfile(ko):
        raise RuntimeError(f"userblk.ko not found in USERBLK_KMOD_DIR={os.environ.get('USERBLK_KMOD_DIR')}")
    run(["insmod", ko])
    return True


class Daemon:
    """A `userblk add` serving in the foreground, as the tests' device."""

    def __init__(self, transport, backend="ram", size="256M", queues=2, depth=64, extra=()):
        self.argv = [USERBLK, "add", "--transport", transport, "--backend", backend,
                     "--size", size, "--queues", str(queues), "--depth", str(depth), *extra]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 2:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"{' '.join(self.argv)} did not print 'ID PATH': {err}")
        self.id, self.path = int(line[0]), line[1]
        deadline = time.monotonic() + 10
        while not os.path.exists(self.path):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.path} did not appear")
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signal the daemon and return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon of {self.path} did not exit {timeout} s after {sig!r}")
        return self.proc.returncode


def fio(*args, timeout=600, check=True):
    argv = ["fio", "--output-format=json", "--direct=1", "--ioengine=io_uring", *args]
    r = run(argv, timeout=timeout, check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"fio failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def fio_errors(r):
    """The error counts fio reports per job, from its JSON (0 means clean)."""
    try:
        start = r.stdout.index("{")
        data = json.loads(r.stdout[start:])
    except ValueError:
        return [r.returncode or 1]
    return [job.get("error", 0) for job in data.get("jobs", [])]


def device_gone(path, timeout=10):
    deadline = time.monotonic() + timeout
    while os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class TransportSuite(unittest.TestCase):
    transport = None          # set per generated class

    def setUp(self):
        self.marker = f"userblk-test-marker: {self.id()} {os.getpid()} {time.time_ns()}"
        kmsg(self.marker)
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            if d.proc.poll() is None:
                d.stop(signal.SIGKILL)
            run([USERBLK, "del", str(d.id)], check=False)
        log = run(["dmesg"]).stdout
        bad = dmesg.bad_lines(log, after_marker=self.marker)
        if bad:
            self.fail("kernel log after the marker shows a problem:\n" + "\n".join(bad))

    def daemon(self, **kw):
        d = Daemon(self.transport, **kw)
        self.daemons.append(d)
        return d

    # -- data integrity ----------------------------------------------------

    def verify(self, rw, bs, qd):
        d = self.daemon(queues=2, depth=64)
        fio(f"--filename={d.path}", "--name=verify", f"--rw={rw}", f"--bs={bs}",
            f"--iodepth={qd}", "--numjobs=2", "--size=24M", "--offset_increment=32M",
            "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--group_reporting")
        self.assertEqual(d.stop(), 0)
        self.assertTrue(device_gone(d.path), f"{d.path} still exists after SIGTERM")

    def test_verify_4k_random_qd1(self):
        self.verify("randwrite", "4k", 1)

    def test_verify_4k_random_qd32(self):
        self.verify("randwrite", "4k", 32)

    def test_verify_1m_sequential_qd1(self):
        self.verify("write", "1M", 1)

    def test_verify_1m_sequential_qd32(self):
        self.verify("write", "1M", 32)

    def test_verify_busy_polling(self):
        """The busy-poll mode, for transports that have one (polling=1)."""
        if capabilities(self.transport).get("polling") != "1":
            self.skipTest(f"{self.transport} does not poll")
        d = self.daemon(queues=2, depth=64, extra=["--poll-us", "50"])
        for rw, bs, qd in (("randwrite", "4k", 1), ("randwrite", "4k", 32), ("write", "1M", 4)):
            fio(f"--filename={d.path}", f"--name=verify-{rw}-{bs}-{qd}", f"--rw={rw}", f"--bs={bs}",
                f"--iodepth={qd}", "--numjobs=2", "--size=8M", "--offset_increment=32M",
                "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--group_reporting")
        self.assertEqual(d.stop(), 0)
        self.assertTrue(device_gone(d.path), f"{d.path} still exists after SIGTERM")

    def test_ext4_files_survive_remount(self):
        d = self.daemon(size="128M")
        mnt = tempfile.mkdtemp(prefix="userblk-ext4-")
        src = os.path.join(TOP, "kmod")
        try:
            run(["mkfs.ext4", "-q", "-F", d.path])
            run(["mount", d.path, mnt])
            shutil.copytree(src, os.path.join(mnt, "tree"),
                            ignore=shutil.ignore_patterns("*.o", ".*.cmd", "*.ko", "*.mod*"))
            want = run(["sh", "-c", "cd tree && find . -type f -exec sha256sum {} + | sort"],
                       cwd=mnt).stdout
            run(["umount", mnt])
            run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"])
            run(["mount", d.path, mnt])
            got = run(["sh", "-c", "cd tree && find . -type f -exec sha256sum {} + | sort"],
                      cwd=mnt).stdout
            run(["umount", mnt])
            run(["fsck.ext4", "-n", "-f", d.path])
        finally:
            subprocess.run(["umount", mnt], capture_output=True)
            os.rmdir(mnt)
        self.assertTrue(want.strip(), "no files were copied")
        self.assertEqual(got, want)

    # -- a daemon that dies, stalls or is removed --------------------------

    def test_daemon_killed_during_fio_fails_io_promptly(self):
        d = self.daemon()
        job = subprocess.Popen(["fio", "--output-format=json", "--direct=1",
                                "--ioengine=io_uring", f"--filename={d.path}", "--name=load",
                                "--rw=randrw", "--bs=4k", "--iodepth=16", "--time_based",
                                "--runtime=60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        time.sleep(3)
        self.assertIsNone(job.poll(), "fio ended before the daemon was killed")
        t0 = time.monotonic()
        d.stop(signal.SIGKILL)
        try:
            out, _ = job.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            job.kill()
            self.fail("fio still running 20 s after the daemon was killed")
        elapsed = time.monotonic() - t0
        self.assertNotEqual(job.returncode, 0, "fio saw no error after the daemon died")
        self.assertLess(elapsed, 20)
        # Later I/O fails fast, and the dead device can be deleted.
        r = run(["dd", f"if={d.path}", "of=/dev/null", "bs=4k", "count=1", "iflag=direct"],
                check=False, timeout=20)
        self.assertNotEqual(r.returncode, 0, "I/O on a dead device succeeded")
        run([USERBLK, "del", str(d.id)])
        self.assertTrue(device_gone(d.path))

    def test_stalled_daemon_is_caught_by_the_timeout(self):
        d = self.daemon(extra=["--timeout-ms", "2000"])
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            r = run(["dd", f"if={d.path}", "of=/dev/null", "bs=4k", "count=1", "iflag=direct"],
                    check=False, timeout=60)
            elapsed = time.monotonic() - t0
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        self.assertNotEqual(r.returncode, 0, "a read from a stalled daemon succeeded")
        self.assertLess(elapsed, 30, "the request timeout of 2 s did not end the read")
        # The timeout killed the device: later I/O fails fast, whatever the daemon does now,
        # and the daemon, woken, finds its device dead and leaves it deleted.
        t0 = time.monotonic()
        r = run(["dd", f"if={d.path}", "of=/dev/null", "bs=4k", "count=1", "iflag=direct"],
                check=False, timeout=60)
        if os.path.exists(d.path):
            self.assertNotEqual(r.returncode, 0, "I/O after the timeout succeeded")
            self.assertLess(time.monotonic() - t0, 5, "I/O after the timeout did not fail fast")
        self.assertEqual(d.stop(timeout=30), 0)
        self.assertTrue(device_gone(d.path))

    def test_delete_under_load(self):
        d = self.daemon()
        job = subprocess.Popen(["fio", "--output-format=json", "--direct=1",
                                "--ioengine=io_uring", f"--filename={d.path}", "--name=load",
                                "--rw=randrw", "--bs=4k", "--iodepth=32", "--numjobs=2",
                                "--time_based", "--runtime=60"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        self.assertIsNone(job.poll(), "fio ended before the delete")
        run([USERBLK, "del", str(d.id)], timeout=60)
        try:
            job.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            job.kill()
            self.fail("fio still running 30 s after the device was deleted")
        self.assertNotEqual(job.returncode, 0, "fio saw no error when its device was deleted")
        self.assertTrue(device_gone(d.path))
        self.assertEqual(d.stop(timeout=30), 0, "the daemon did not exit cleanly after the delete")

    # -- bad input ---------------------------------------------------------

    def test_bad_input_is_rejected(self):
        if not os.access(BADINPUT, os.X_OK):
            self.fail(f"{BADINPUT} is missing: run 'make build'")
        r = run([BADINPUT, f"--transport={self.transport}"], check=False, timeout=300)
        if r.returncode == 77:
            self.skipTest(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "skipped")
        self.assertEqual(r.returncode, 0, r.stdout[-6000:] + r.stderr[-3000:])


def capabilities(transport):
    """The key=value lines of `userblk --dump-transport`, as a dict."""
    r = run([USERBLK, "--dump-transport", transport])
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def transports():
    """Every registered transport served by a daemon (the kernel-only references have none)."""
    r = run([USERBLK, "--list-transports"])
    names = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    return [n for n in names
            if "kind=reference" not in run([USERBLK, "--dump-transport", n]).stdout.splitlines()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transport", action="append",
                    help="transport to test (repeatable; default: every registered one)")
    ap.add_argument("-k", dest="pattern", action="append", help="only tests matching this")
    a = ap.parse_args()

    if os.geteuid() != 0:
        print("SKIP: the kernel suite needs root")
        return 77
    if not os.access(USERBLK, os.X_OK):
        print(f"FAIL: {USERBLK} is missing: run 'make build'")
        return 1
    loaded = load_module()
    names = a.transport or transports()
    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    if a.pattern:
        loader.testNamePatterns = [f"*{p}*" for p in a.pattern]
    for name in names:
        cls = type(f"Transport_{name}", (TransportSuite,), {"transport": name})
        suite.addTests(loader.loadTestsFromTestCase(cls))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    if loaded:
        r = run(["rmmod", "userblk"], check=False)
        if r.returncode != 0:
            print(f"FAIL: rmmod userblk after the suite: {r.stderr.strip()}")
            return 1
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed - len(result.skipped)} passed, {failed} failed, "
          f"{len(result.skipped)} skipped")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
