#!/usr/bin/python3
"""The generic kernel-in-the-loop suite: one body for every registered transport and backend.

Runs inside the platform (the VM or a native host), as root:

    harness/platform run -- tests/vm/suite.py --transport copy [--backend file] [-k PATTERN]

A reference (kind=reference: nbdkit, loop, brd) named with --transport runs the data
integrity tests only (REFERENCE_TESTS); one that keeps no data (null_blk) is skipped.

The same tests run on every backend that stores data: `ram` (in the daemon), `file` (a
backing file the suite makes in a scratch folder) and `forward` (an NBD server over TCP:
the suite starts `nbdkit memory` on 127.0.0.1 for each device and stops it after). Every
test writes a marker into the kernel log first and fails if WARNING:, BUG:, Oops, a hung
task or KASAN appears after it. Exit status: 0 pass, 1 fail, 77 skip (with the reason
printed).
"""

import argparse
import errno
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
LIFETIME = os.path.join(BUILD, "tests", "vm", "userblk_lifetime_test")
RECOVERY = os.path.join(BUILD, "tests", "vm", "userblk_recovery_test")
LEND = os.path.join(BUILD, "tests", "vm", "userblk_lend_test")
STALL_DAEMON = os.path.join(BUILD, "tests", "vm", "userblk_stall_daemon")
CONTROL = "/dev/userblk-control"

sys.path.insert(0, os.path.join(TOP, "harness"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from userblk_harness import bench, dmesg, fioresult, runner, stores  # noqa: E402


def run(argv, timeout=300, check=True, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def kmsg(line):
    with open("/dev/kmsg", "w") as f:
        f.write(line + "\n")


def load_module():
    """Load userblk.ko from USERBLK_KMOD_DIR unless it is loaded already (the harness's loader);
    True if this call loaded it."""
    loaded, err = runner.load_module()
    if err:
        raise RuntimeError(err)
    return loaded


# The backends the suite runs on: those that keep data (null drops it), with their stores made
# by the harness's stores module (file: a backing file; forward: nbdkit on 127.0.0.1).
BACKENDS = ("ram", "file", "forward")
# MiB each of the two verify jobs writes and reads back, by (block size, depth): enough blocks
# that every tag is reused many times (a depth of 64 per queue) and large requests cross the
# queues' buffers, no more, since a 4 KiB request at QD1 is a full round trip under TCG (about
# 0.5 ms on ram, 5 ms over TCP to nbdkit for forward).
VERIFY_MIB = {("4k", 1): 8, ("4k", 32): 16, ("1M", 1): 24, ("1M", 32): 24}
VERIFY_MIB_FORWARD = {("4k", 1): 4, ("4k", 32): 8, ("1M", 1): 8, ("1M", 32): 8}


class Daemon:
    """A `userblk add` serving in the foreground, as the tests' device."""

    def __init__(self, transport, store, size="256M", queues=2, depth=64, extra=(), argv=None):
        self.transport = transport
        self.store = store
        self.extra = list(extra)
        self.argv = argv or [USERBLK, "add", "--transport", transport,
                             *(["--backend", store.spec] if store.spec else []),
                             "--size", size, "--queues", str(queues), "--depth", str(depth),
                             *extra]
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

    def recover(self):
        """A new daemon taking over this one's recovering device: `userblk recover`, with the
        same store and the serving options of this one that recover takes (--spin-us)."""
        args = list(self.extra)
        serve = [x for a, v in zip(args, args[1:]) if a in ("--spin-us", "--poll-us")
                 for x in (a, v)]
        return Daemon(self.transport, self.store,
                      argv=[USERBLK, "recover", str(self.id), "--transport", self.transport,
                            "--backend", self.store.spec, *serve])

    def cli(self, command):
        """The argv of `userblk COMMAND` (del, stats) for this device: with its transport,
        which names devices whose ids are not userblk.ko's (ublk)."""
        return [USERBLK, command, "--transport", self.transport, str(self.id)]

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


# fio options every fio of the running test adds: ["--hipri"] in a polled variant's suite, whose
# poll queues take only polled I/O (TransportSuite.setUp sets it).
FIO_EXTRA = []


def fio_base():
    """fio's argv up to the job's own options: JSON output, O_DIRECT, io_uring, FIO_EXTRA."""
    return ["fio", "--output-format=json", "--direct=1", "--ioengine=io_uring", *FIO_EXTRA]


def fio(*args, timeout=600, check=True):
    argv = [*fio_base(), *args]
    r = run(argv, timeout=timeout, check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"fio failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def fio_json(r):
    """fio's JSON document from its stdout, read as the harness reads it (fioresult)."""
    try:
        return fioresult.load_text(r.stdout)
    except fioresult.FioResultError as e:
        raise AssertionError(f"{e}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}") from None


def fio_errors(r):
    """The error counts fio reports per job, from its JSON (0 means clean)."""
    try:
        data = fio_json(r)
    except AssertionError:
        return [r.returncode or 1]
    return [job.get("error", 0) for job in data.get("jobs", [])]


def fio_bytes(r, direction):
    """Bytes fio moved in direction ("read" or "write"), over all its jobs."""
    return sum(job.get(direction, {}).get("io_bytes", 0) for job in fio_json(r).get("jobs", []))


def sys_block(path, attr):
    """/sys/block/<disk of path>/attr, stripped, or None."""
    try:
        with open(f"/sys/block/{os.path.basename(os.path.realpath(path))}/{attr}") as f:
            return f.read().strip()
    except OSError:
        return None


def disk_ended(path):
    """Whether the device at path is no longer served: its node is gone (userblk, ublk), or
    the node stays and the disk has no size and no server (nbd's and loop's nodes outlive
    their devices; an nbd disk has a pid attribute while connected)."""
    if not os.path.exists(path):
        return True
    return sys_block(path, "size") == "0" and sys_block(path, "pid") is None


def device_gone(path, timeout=10):
    deadline = time.monotonic() + timeout
    while not disk_ended(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def read_one_block(path):
    """dd of one 4 KiB block: None if it failed, else the bytes it read (0 from a disk of
    size 0, which is what an ended nbd device is)."""
    r = run(["dd", f"if={path}", "of=/dev/null", "bs=4k", "count=1", "iflag=direct"],
            check=False, timeout=60)
    if r.returncode != 0:
        return None
    for line in r.stderr.splitlines():
        if "bytes" in line and "copied" in line:
            return int(line.split()[0])
    raise AssertionError(f"dd printed no byte count: {r.stderr}")


def tree_hashes(top):
    """sha256sum of every file under top/tree, sorted: what a copy must reproduce."""
    return run(["sh", "-c", "cd tree && find . -type f -exec sha256sum {} + | sort"],
               cwd=top).stdout


# The counters of a stats document that are per-queue sums (the rest are maxima or lists).
def _counters(section, prefix=""):
    out = {}
    for k, v in section.items():
        if isinstance(v, dict):
            out.update(_counters(v, f"{prefix}{k}."))
        elif isinstance(v, int) and not isinstance(v, bool) and not k.endswith("max"):
            out[prefix + k] = v
    return out


class KernelStore:
    """The store of a kernel-only reference (loop, brd): no backend, the kernel keeps the data."""
    spec = None
    outlives_daemon = False

    def close(self):
        pass


# What a reference device (kind=reference: no transport of ours, e.g. nbdkit, loop, brd) must
# pass: data integrity. The rest of the suite is about our daemons.
REFERENCE_TESTS = ("test_verify_4k_random_qd32", "test_verify_1m_sequential_qd32",
                   "test_ext4_files_survive_remount")


def variant_poll_queues(variant_args):
    """The poll queues a variant's `userblk add` options ask for (--poll-queues N), or 0."""
    args = list(variant_args)
    return next((int(v) for a, v in zip(args, args[1:]) if a == "--poll-queues"), 0)


def variant_lends(variant_args):
    """Whether a variant's `userblk add` options turn lending on (--lend on; lend=off is not)."""
    args = list(variant_args)
    return any(a == "--lend" and v == "on" for a, v in zip(args, args[1:]))


class TransportSuite(unittest.TestCase):
    transport = None          # set per generated class: the registered name ("splice")
    variant_args = ()         # `userblk add` options of a variant ("splice:lend=on": --lend on)
    backend = "ram"           # set per generated class
    kernel_only = False       # a reference without a backend (loop, brd)
    scratch = None            # a folder for backing files, statistics, nbdkit's pid files

    def setUp(self):
        self.t0 = time.monotonic()
        self.marker = f"userblk-test-marker: {self.id()} {os.getpid()} {time.time_ns()}"
        FIO_EXTRA[:] = ["--hipri"] if variant_poll_queues(self.variant_args) else []
        kmsg(self.marker)
        self.daemons = []
        self.stores = []

    def tearDown(self):
        # Newest first; a daemon that exited cleanly deleted its device, whose id a later
        # daemon of the test may have taken since.
        for d in reversed(self.daemons):
            if d.proc.poll() is None:
                # SIGTERM first: a kernel-only reference (brd) is only undone by its daemon.
                try:
                    d.stop(signal.SIGTERM, timeout=30)
                except AssertionError:
                    pass   # stop() killed it
            if d.proc.returncode != 0:
                run(d.cli("del"), check=False)
        for s in self.stores:
            s.close()
        log = run(["dmesg"]).stdout
        bad = dmesg.bad_lines(log, after_marker=self.marker)
        sys.stderr.write(f"[{time.monotonic() - self.t0:.1f} s] ")
        sys.stderr.flush()
        if bad:
            self.fail("kernel log after the marker shows a problem:\n" + "\n".join(bad))

    def store(self, size="256M"):
        """A new store of this suite's backend, closed after the test."""
        if self.kernel_only:
            return KernelStore()
        try:
            s = stores.make(self.backend, size, self.scratch)
        except stores.StoreError as e:
            raise AssertionError(str(e))
        self.stores.append(s)
        return s

    def daemon(self, store=None, size="256M", **kw):
        """A daemon serving a device of size; on a new store unless one is given."""
        kw["extra"] = [*self.variant_args, *kw.get("extra", ())]
        polled = variant_poll_queues(self.variant_args)
        if polled:
            # At least one queue takes the I/O that is not polled (udev, file systems). And no
            # polled I/O of the suite's (1 MiB at most) is split: 6.1 fails a polled bio that
            # needs a split with EAGAIN, and io_uring's IOPOLL then never completes it (null_blk
            # too: docs/polling.md).
            kw["queues"] = max(kw.get("queues", 2), polled + 1)
            kw["extra"] += ["--max-io", "1M"]
        d = Daemon(self.transport, store or self.store(size), size=size, **kw)
        self.daemons.append(d)
        return d

    def lends(self):
        """Whether this is a lending variant (--lend on)."""
        return variant_lends(self.variant_args)

    def not_about_polling(self, what):
        """Skip in a polled variant's suite: what the test checks (the daemon's statistics, the
        device's features) is the same code with and without polling, and the base's suite in
        the same boot runs it."""
        if variant_poll_queues(self.variant_args):
            self.skipTest(f"{what} does not depend on polling: {self.transport}'s suite runs it")

    def base_transport_only(self, what):
        """Skip in a variant's suite: what the test checks is the base transport's (it makes its
        own devices, without the variant's options), so the base's suite runs it."""
        if self.variant_args:
            self.skipTest(f"{what} is {self.transport}'s own: its suite runs it")

    def transport_property(self, what):
        """Skip unless this is the ram suite: what the test checks belongs to the transport and
        userblk.ko, which never see the backend, so the file and forward suites would only run
        it again (and make test would take a boot's worth longer per suite)."""
        home = self.home_backend()
        if self.backend != home:
            self.skipTest(f"{what} is the transport's, not the backend's: it runs in the {home} "
                          "suite")

    def home_backend(self):
        """Where the tests of the transport itself run: the ram suite, or for a variant (which
        make test runs only on the backends it changes: file and forward) the file suite."""
        # A lending variant changes only the file and forward paths; a polled one is ram's.
        return "file" if self.lends() else "ram"

    # -- data integrity ----------------------------------------------------

    def verify(self, rw, bs, qd):
        d = self.daemon(queues=2, depth=64)
        mib = (VERIFY_MIB_FORWARD if self.backend == "forward" else VERIFY_MIB)[(bs, qd)]
        fio(f"--filename={d.path}", "--name=verify", f"--rw={rw}", f"--bs={bs}",
            f"--iodepth={qd}", "--numjobs=2", f"--size={mib}M", "--offset_increment=32M",
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
        if "--spin-us" in self.variant_args:
            self.skipTest("the variant spins (--spin-us), which --poll-us would replace")
        d = self.daemon(queues=2, depth=64, extra=["--poll-us", "50"])
        for rw, bs, qd in (("randwrite", "4k", 1), ("randwrite", "4k", 32), ("write", "1M", 4)):
            fio(f"--filename={d.path}", f"--name=verify-{rw}-{bs}-{qd}", f"--rw={rw}", f"--bs={bs}",
                f"--iodepth={qd}", "--numjobs=2", "--size=8M", "--offset_increment=32M",
                "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--group_reporting")
        self.assertEqual(d.stop(), 0)
        self.assertTrue(device_gone(d.path), f"{d.path} still exists after SIGTERM")

    def test_polled_io_is_reaped_by_its_submitter_without_a_wakeup(self):
        """A polled variant (poll queues, a daemon that spins): fio's polled 4 KiB reads at QD1
        complete through blk-mq's poll of the completion ring, the kernel publishes them without
        waking the daemon, and the daemon makes next to no system call per request; polled
        writes verify; preadv2(RWF_HIPRI) (fio pvsync2 --hipri) verifies too (6.1 does not poll
        a synchronous direct read of a block device: its I/O takes a default queue)."""
        if not variant_poll_queues(self.variant_args):
            self.skipTest("not a polled variant (--poll-queues)")
        stats = os.path.join(self.scratch, f"polled-{self.transport}.json")
        d = self.daemon(queues=2, depth=64, extra=["--stats-json", stats])
        before = {k: int(sys_block(d.path, f"userblk/{k}"))
                  for k in ("poll_completions", "daemon_wakeups", "daemon_wakeups_skipped")}
        r = fio(f"--filename={d.path}", "--name=polled", "--rw=randread", "--bs=4k",
                "--iodepth=1", "--size=64M", "--time_based", "--runtime=3")
        ios = sum(j["read"]["total_ios"] for j in fio_json(r)["jobs"])
        after = {k: int(sys_block(d.path, f"userblk/{k}")) for k in before}
        polled = after["poll_completions"] - before["poll_completions"]
        woken = after["daemon_wakeups"] - before["daemon_wakeups"]
        self.assertGreater(ios, 100, "fio did almost nothing")
        self.assertGreaterEqual(polled, 0.9 * ios,
                                f"{polled} of {ios} polled reads were reaped by the poll")
        self.assertLessEqual(woken, 0.05 * ios, f"the spinning daemon was woken {woken} times "
                             f"for {ios} reads")
        fio(f"--filename={d.path}", "--name=polled-verify", "--rw=randwrite", "--bs=4k",
            "--iodepth=16", "--numjobs=2", "--size=16M", "--offset_increment=32M",
            "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--group_reporting")
        fio(f"--filename={d.path}", "--name=hipri-sync", "--ioengine=pvsync2", "--hipri",
            "--rw=randwrite", "--bs=4k", "--size=4M", "--verify=crc32c", "--do_verify=1",
            "--verify_fatal=1")
        self.assertEqual(d.stop(), 0)
        with open(stats) as f:
            doc = json.load(f)
        total = doc["total"]
        calls = sum(total["syscalls"].values())
        reqs = sum(total["requests"].values())
        self.assertGreater(reqs, ios)
        # Per request: the polled reads made none; the default queue's requests (udev's probes,
        # the pvsync2 job's) one RING_ENTER per batch each.
        self.assertLess(calls / reqs, 0.5, f"{calls} syscalls for {reqs} requests")

    def test_classic_and_hybrid_polling_settings(self):
        """blk-mq's polling settings on a device with poll queues: queue/io_poll reads 1 and
        a write to it changes nothing (6.1 ignores it); queue/io_poll_delay takes -1 (classic),
        0 (adaptive hybrid) and a delay in µs and reads back what was written, and with each
        polled reads verify and are reaped by the poll. Hybrid polling is dead code on 6.1
        (io_uring always polls with BLK_POLL_NOSLEEP), so the poll stays classic. A device
        without poll queues says io_poll 0 and refuses io_poll_delay for copy, pipe and splice
        (no .poll); ring keeps .poll for its default queues and takes the setting."""
        polled = variant_poll_queues(self.variant_args)
        if not polled:
            self.base_transport_only("the polling settings of a device without poll queues")
        self.transport_property("the polling settings")
        d = self.daemon(queues=2, depth=64)
        self.assertEqual(sys_block(d.path, "queue/io_poll"), "1" if polled else "0")
        queue = f"/sys/block/{os.path.basename(os.path.realpath(d.path))}/queue"
        delay = f"{queue}/io_poll_delay"
        if not polled:
            try:
                with open(delay, "w") as f:
                    f.write("0")
                takes = True
            except OSError as e:
                self.assertEqual(e.errno, errno.EINVAL, f"{delay}: {e}")
                takes = False
            self.assertEqual(takes, self.transport == "ring",
                             f"{delay} {'took' if takes else 'refused'} a setting")
            self.assertEqual(d.stop(), 0)
            return
        with open(f"{queue}/io_poll", "w") as f:
            f.write("0")
        self.assertEqual(sys_block(d.path, "queue/io_poll"), "1", "io_poll 0 turned polling off")
        for value in ("0", "20", "-1"):
            with open(delay, "w") as f:
                f.write(value)
            self.assertEqual(sys_block(d.path, "queue/io_poll_delay"), value)
            before = int(sys_block(d.path, "userblk/poll_completions"))
            r = fio(f"--filename={d.path}", f"--name=poll-delay{value}", "--rw=randwrite",
                    "--bs=4k", "--iodepth=4", "--size=8M", "--verify=crc32c", "--do_verify=1",
                    "--verify_fatal=1")
            ios = sum(j["write"]["total_ios"] + j["read"]["total_ios"]
                      for j in fio_json(r)["jobs"])
            reaped = int(sys_block(d.path, "userblk/poll_completions")) - before
            self.assertGreaterEqual(reaped, 0.9 * ios,
                                    f"io_poll_delay {value}: {reaped} of {ios} polled I/Os "
                                    "reaped by the poll")
        self.assertEqual(d.stop(), 0)

    def test_ext4_files_survive_remount(self):
        """Files copied onto ext4 read back the same after a remount with cold caches. Where
        the data outlives the daemon (a file, an NBD server), the remount is on a new daemon
        serving the same store: the data must have reached the store, not stayed in the
        daemon."""
        d = self.daemon(size="128M")
        restart = d.store.outlives_daemon
        mnt = tempfile.mkdtemp(prefix="userblk-ext4-")
        src = os.path.join(TOP, "kmod")
        try:
            run(["mkfs.ext4", "-q", "-F", d.path])
            run(["mount", d.path, mnt])
            shutil.copytree(src, os.path.join(mnt, "tree"),
                            ignore=shutil.ignore_patterns("*.o", ".*.cmd", "*.ko", "*.mod*"))
            want = tree_hashes(mnt)
            run(["umount", mnt])
            if restart:
                self.assertEqual(d.stop(), 0)
                self.assertTrue(device_gone(d.path), f"{d.path} still exists after SIGTERM")
                d = self.daemon(store=d.store, size="128M")
            run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"])
            run(["mount", d.path, mnt])
            got = tree_hashes(mnt)
            run(["umount", mnt])
            run(["fsck.ext4", "-n", "-f", d.path])
        finally:
            subprocess.run(["umount", mnt], capture_output=True)
            os.rmdir(mnt)
        self.assertTrue(want.strip(), "no files were copied")
        self.assertEqual(got, want)
        if isinstance(d.store, stores.FileStore):
            # The file itself holds the file system, as large as the device.
            self.assertEqual(d.stop(), 0)
            self.assertEqual(os.path.getsize(d.store.path), 128 << 20)
            run(["fsck.ext4", "-n", "-f", d.store.path])

    # -- the daemon's statistics -------------------------------------------

    def test_stats_count_the_data_that_entered_the_daemon(self):
        """user_data_bytes, after verify runs: 0 where the transport keeps the data in the
        kernel (data_stays_in_kernel=1, or zero_copy=1, in --dump-transport) and the backend
        moves pipe data natively (native_pipe=1 in --dump-backend); otherwise every byte read
        or written. The shared pipe adapter's copies are part of it."""
        self.not_about_polling("the daemon's data counters")
        tcaps, bcaps = capabilities(self.transport), backend_capabilities(self.backend)
        in_kernel = "1" in (tcaps.get("data_stays_in_kernel"), tcaps.get("zero_copy"))
        stays_out = in_kernel and bcaps.get("native_pipe") == "1"
        path = os.path.join(self.scratch, f"stats-{self.transport}-{self.backend}.json")
        d = self.daemon(queues=2, depth=64, extra=["--stats-json", path])
        written = read = 0
        for rw, bs, qd, size in (("randwrite", "4k", 8, "1M"), ("write", "1M", 4, "8M")):
            r = fio(f"--filename={d.path}", f"--name=stats-{rw}", f"--rw={rw}", f"--bs={bs}",
                    f"--iodepth={qd}", f"--size={size}", "--offset=64M", "--verify=crc32c",
                    "--do_verify=1", "--verify_fatal=1")
            written += fio_bytes(r, "write")
            read += fio_bytes(r, "read")
        self.assertEqual(d.stop(), 0)
        with open(path) as f:
            doc = json.load(f)
        total = doc["total"]
        moved = total["bytes"]["read"] + total["bytes"]["write"]
        self.assertEqual(total["bytes"]["write"], written, "the daemon saw other writes than fio's")
        # Reads: fio's, plus the kernel's partition scan when the device appeared.
        self.assertGreaterEqual(total["bytes"]["read"], read)
        self.assertEqual(total["errors"]["io"], 0)
        how = (f"{self.transport} (data_stays_in_kernel={tcaps.get('data_stays_in_kernel')}, "
               f"zero_copy={tcaps.get('zero_copy')}) with {self.backend} "
               f"(native_pipe={bcaps.get('native_pipe')})")
        if stays_out:
            self.assertEqual(total["user_data_bytes"], 0,
                             f"{how}: data entered the daemon's memory")
        else:
            self.assertEqual(total["user_data_bytes"], moved,
                             f"{how}: user_data_bytes is not the bytes read and written")
        self.assertLessEqual(total["adapter_copied_bytes"], total["user_data_bytes"],
                             f"{how}: the pipe adapter copied bytes not counted as entering "
                             "the daemon")
        self.assert_total_is_sum_of_queues(doc)

    def test_the_kernel_counts_the_data_it_copied(self):
        """userblk.ko's copy counters (sysfs userblk/*_copied_*_bytes), after verify runs: every
        byte the daemon saw read or written was copied by the kernel exactly once, into or out
        of what the transport's kernel_copy= says (--dump-transport): the daemon's memory
        ("user") or kernel pages ("kernel", a pipe's); the other kind stays 0."""
        self.not_about_polling("the kernel's copy counters")
        tcaps, bcaps = capabilities(self.transport), backend_capabilities(self.backend)
        if tcaps.get("kind") != "userblk":
            self.skipTest(f"{self.transport} is not a userblk.ko transport: no counters of ours")
        kind = tcaps.get("kernel_copy", "")
        if kind.startswith("kernel if the backend has native_pipe=1"):
            kind = "kernel" if bcaps.get("native_pipe") == "1" else "user"
        self.assertIn(kind, ("user", "kernel"), f"kernel_copy={tcaps.get('kernel_copy')}")
        # Lending: a WRITE's pages go into the pipe, not a copy, wherever the data goes through
        # a pipe (pipe always; splice with a native pipe backend).
        lent = self.lends() and kind == "kernel"
        d = self.daemon(queues=2, depth=32)
        for rw, bs, qd, size in (("randwrite", "4k", 8, "1M"), ("write", "1M", 4, "8M")):
            fio(f"--filename={d.path}", f"--name=copies-{rw}", f"--rw={rw}", f"--bs={bs}",
                f"--iodepth={qd}", f"--size={size}", "--offset=64M", "--verify=crc32c",
                "--do_verify=1", "--verify_fatal=1")
        # The counters and the daemon's bytes at one moment: no I/O between two reads of the
        # daemon's statistics (udev may still probe the device after fio closed it).
        run(["udevadm", "settle", "--timeout=10"], check=False)
        for _ in range(5):
            first = json.loads(run(d.cli("stats"), timeout=30).stdout)["total"]["bytes"]
            copied = {f"{op}_{where}": sys_block(d.path, f"userblk/{op}_copied_{where}_bytes")
                      for op in ("write", "read") for where in ("user", "kernel")}
            copied["write_lent"] = sys_block(d.path, "userblk/write_lent_bytes")
            second = json.loads(run(d.cli("stats"), timeout=30).stdout)["total"]["bytes"]
            if first == second:
                break
            time.sleep(0.5)
        self.assertEqual(first, second, "the device did not go quiet")
        self.assertNotIn(None, copied.values(), f"no sysfs userblk/ counters: {copied}")
        copied = {k: int(v) for k, v in copied.items()}
        self.assertEqual(d.stop(), 0)
        other = "user" if kind == "kernel" else "kernel"
        how = f"{self.transport} with {self.backend} (kernel_copy={kind}): {copied}"
        self.assertGreaterEqual(first["write"], 9 << 20, how)
        self.assertEqual(copied["write_lent"], first["write"] if lent else 0, how)
        self.assertEqual(copied[f"write_{kind}"], 0 if lent else first["write"], how)
        self.assertEqual(copied[f"read_{kind}"], first["read"], how)
        self.assertEqual(copied[f"write_{other}"], 0, how)
        self.assertEqual(copied[f"read_{other}"], 0, how)

    def write_against_server(self, order, delay_s=0.0):
        """One O_DIRECT WRITE of a page at 1 MiB through a device forwarding to a test NBD
        server (tests/vm/nbd_test_server.py) that replies after or before reading the data.
        As soon as pwrite() returns the writer puts other bytes into the same buffer, as any
        application may. Returns (what the server read, seconds pwrite took, the server)."""
        import mmap
        import nbd_test_server
        server = nbd_test_server.Server(64 << 20, 1 << 20, order, delay_s)
        self.addCleanup(server.close)

        class Served:
            spec = server.spec

        d = self.daemon(store=Served(), size="64M", queues=1, depth=4)
        before, after = b"A" * 4096, b"B" * 4096
        buf = mmap.mmap(-1, 4096)
        buf[:] = before
        fd = os.open(d.path, os.O_WRONLY | os.O_DIRECT)
        try:
            t0 = time.monotonic()
            self.assertEqual(os.pwrite(fd, buf, 1 << 20), 4096)
            took = time.monotonic() - t0
            buf[:] = after
            server.proceed.set()
            self.assertTrue(server.watched.wait(30), "the server never read the WRITE")
        finally:
            os.close(fd)
        self.assertEqual(server.errors, [])
        self.assertEqual(d.stop(), 0)
        return server.received, took, server

    def test_a_forwarded_write_completes_only_after_its_reply(self):
        """forward: a WRITE completes after the server's reply, and the reply comes only once
        the server has read every byte, so the socket holds none of the request's pages by
        then; the writer may reuse its buffer at once (docs/splice-and-pipe.md, "Pages a socket
        took"). Then the broken order: a server that replies before it reads. With the copying
        default the server still gets the bytes written; with --lend on it reads the writer's
        page as it is *later*: what makes lending unsafe, shown."""
        if self.backend != "forward":
            self.skipTest("it needs the forward backend (a test NBD server of its own)")
        if capabilities(self.transport).get("kind") != "userblk":
            self.skipTest(f"{self.transport} is not a userblk.ko transport")
        delay = 0.5
        got, took, server = self.write_against_server("reply-after-read", delay)
        self.assertEqual(got, b"A" * 4096, "the server did not get the bytes written")
        self.assertGreaterEqual(took, delay, f"pwrite returned after {took:.3f} s, before the "
                                f"server's reply ({delay} s after it read the data)")
        got, took, server = self.write_against_server("reply-before-read")
        self.assertLess(server.replied_at, server.read_at)
        lends = self.lends() and capabilities(self.transport).get("lend") == "1"
        if lends:
            self.assertEqual(got, b"B" * 4096,
                             "lending over a server that replies before reading: the server "
                             "was expected to read the writer's later bytes (the lent page)")
        else:
            self.assertEqual(got, b"A" * 4096,
                             "a copying transport must hand the server the bytes written")

    def test_the_device_offers_what_its_backend_serves(self):
        """Without --features the device gets what the backend serves (Backend::serves()), the
        block layer shows it, and discard and write-zeroes then work end to end."""
        self.not_about_polling("the device's features")
        path = os.path.join(self.scratch, f"features-{self.transport}-{self.backend}.json")
        d = self.daemon(size="64M", queues=1, depth=16, extra=["--stats-json", path])
        # ram: no cache, discard and zeroing; file: the page cache, and discard where the
        # scratch file system punches holes; forward: nbdkit's memory plugin (flush, trim).
        cache = self.backend in ("file", "forward")
        discard = sys_block(d.path, "queue/discard_max_bytes")
        wzeroes = sys_block(d.path, "queue/write_zeroes_max_bytes")
        write_cache = sys_block(d.path, "queue/write_cache")
        fio(f"--filename={d.path}", "--name=pattern", "--rw=write", "--bs=64k", "--size=4M",
            "--verify=crc32c", "--do_verify=0")
        trim = run(["blkdiscard", "--offset", "0", "--length", "1M", d.path], check=False)
        zero = run(["blkdiscard", "--zeroout", "--offset", "1M", "--length", "1M", d.path],
                   check=False)
        self.assertEqual(d.stop(), 0)
        with open(path) as f:
            features = set(json.load(f)["device"]["features"].split(","))
        self.assertFalse({"read-only", "any-daemon"} & features, features)
        self.assertEqual({"flush", "fua"} <= features, cache, features)
        self.assertEqual("flush" in features, write_cache == "write back",
                         f"features {features}, queue/write_cache {write_cache}")
        self.assertIn("write-zeroes", features)
        self.assertEqual(zero.returncode, 0, zero.stderr)
        if self.backend != "file":
            self.assertIn("discard", features)
        self.assertEqual("discard" in features, discard not in (None, "0"),
                         f"features {features}, queue/discard_max_bytes {discard}")
        if "discard" in features:
            self.assertEqual(trim.returncode, 0, trim.stderr)
        else:
            self.assertNotEqual(trim.returncode, 0, "blkdiscard of a device without discard")
        if capabilities(self.transport).get("kind") == "userblk":
            # Linux 6.1's nbd has no WRITE_ZEROES (zero pages are written instead), and only
            # userblk.ko is ours to check here.
            self.assertNotIn(wzeroes, (None, "0"), "queue/write_zeroes_max_bytes")

    def assert_total_is_sum_of_queues(self, doc):
        want = _counters(doc["total"])
        got = dict.fromkeys(want, 0)
        for q in doc["queues"]:
            for k, v in _counters(q).items():
                if k in got:
                    got[k] += v
        self.assertEqual(got, want, "total is not the sum of the queues")

    def test_userblk_stats_prints_the_live_statistics(self):
        """`userblk stats ID` asks the daemon serving ID for its statistics now."""
        self.not_about_polling("`userblk stats`")
        self.transport_property("the stats socket")
        d = self.daemon(queues=2, depth=32)
        fio(f"--filename={d.path}", "--name=stats", "--rw=randwrite", "--bs=4k", "--iodepth=4",
            "--size=1M")
        r = run(d.cli("stats"), timeout=30)
        doc = json.loads(r.stdout)
        self.assertEqual(doc["schema"], "userblk-stats/1")
        self.assertEqual(doc["transport"], self.transport)
        self.assertEqual(doc["backend"], self.backend)
        self.assertEqual(doc["device"]["id"], d.id)
        self.assertEqual(doc["device"]["path"], d.path)
        self.assertEqual(len(doc["queues"]), 2)
        for i, q in enumerate(doc["queues"]):
            self.assertEqual(q["queue"], i)
            for key in ("requests", "bytes", "errors", "syscalls", "request_batches",
                        "completion_batches", "user_data_bytes", "adapter_copied_bytes"):
                self.assertIn(key, q, f"queue {i}")
            for key in ("read", "write", "total"):
                self.assertIn(key, q["requests"], f"queue {i}")
                self.assertIn(key, q["bytes"], f"queue {i}")
        self.assertGreater(doc["total"]["requests"]["write"], 0)
        self.assertEqual(doc["total"]["bytes"]["write"], 1 << 20)
        self.assert_total_is_sum_of_queues(doc)
        # Live: the next call sees the I/O done since.
        fio(f"--filename={d.path}", "--name=stats", "--rw=randread", "--bs=4k", "--iodepth=4",
            "--size=512K")
        later = json.loads(run(d.cli("stats"), timeout=30).stdout)
        self.assertGreaterEqual(later["total"]["bytes"]["read"],
                                doc["total"]["bytes"]["read"] + (512 << 10))
        self.assertEqual(d.stop(), 0)
        gone = run(d.cli("stats"), check=False, timeout=30)
        self.assertEqual(gone.returncode, 1, gone.stdout + gone.stderr)
        self.assertIn("no daemon serves ", gone.stderr)
        self.assertIn(f"device {d.id}: ", gone.stderr)

    # -- a daemon that dies, stalls or is removed --------------------------

    def test_daemon_killed_during_fio_fails_io_promptly(self):
        """Recovery after a crash: the requests in flight fail, later I/O fails, the device is
        deleted with `userblk del`, and a new daemon serves the same store: what was written
        before the crash (and completed) is there when the store outlives the daemon."""
        d = self.daemon()
        # Written and completed before the crash, outside the load's range.
        kept = ["--name=kept", "--rw=write", "--bs=64k", "--size=1M", "--offset=192M",
                "--verify=crc32c", "--verify_fatal=1"]
        fio(f"--filename={d.path}", *kept, "--do_verify=0")
        job = subprocess.Popen([*fio_base(), f"--filename={d.path}", "--name=load",
                                "--rw=randrw", "--bs=4k", "--iodepth=16", "--size=128M",
                                "--time_based", "--runtime=60"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
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
        # Later I/O fails fast (or finds a disk of size 0), and the dead device can be deleted.
        t0 = time.monotonic()
        got = read_one_block(d.path)
        self.assertFalse(got, f"I/O on a dead device read {got} bytes")
        self.assertLess(time.monotonic() - t0, 20)
        # A killed daemon leaves its runtime record behind: `userblk stats` says so.
        r = run(d.cli("stats"), check=False, timeout=30)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("stale", r.stderr)
        run(d.cli("del"))
        self.assertTrue(device_gone(d.path))
        # A new daemon on the same store.
        again = self.daemon(store=d.store)
        if d.store.outlives_daemon:
            fio(f"--filename={again.path}", *kept, "--verify_only=1")
        fio(f"--filename={again.path}", "--name=after", "--rw=randwrite", "--bs=4k",
            "--size=4M", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1")
        self.assertEqual(again.stop(), 0)

    def test_a_killed_daemon_is_replaced_under_fio_verify(self):
        """Recovery (--recovery on): the daemon is killed with SIGKILL three times under fio's
        random writes at QD32 and its verify, and each time `userblk recover` serves the device
        again: fio sees no error and every block verifies. Then a planned hand-over under I/O
        (`userblk handover`: the old daemon exits 0) and a new daemon, again without an error.
        On stores that outlive their daemon (file, forward); the harness's recovery workload
        kills more often and measures (docs/reliability.md)."""
        if capabilities(self.transport).get("recovery") != "1":
            self.skipTest(f"{self.transport} does not recover (recovery=0 in --dump-transport)")
        if self.backend == "ram":
            self.skipTest("ram's data dies with its daemon: recovery runs on file and forward")
        d = self.daemon(extra=["--recovery", "on", "--recovery-timeout-ms", "60000"])
        mib = 16 if self.backend == "forward" else 48
        job = subprocess.Popen([*fio_base(), f"--filename={d.path}", "--name=verify",
                                "--rw=randwrite", "--bs=4k", "--iodepth=32", f"--size={mib}M",
                                "--verify=crc32c", "--do_verify=1", "--verify_fatal=1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        kills = 0
        for _ in range(3):
            time.sleep(1.0)
            if job.poll() is not None:
                break
            self.assertEqual(d.stop(signal.SIGKILL), -signal.SIGKILL)
            d = d.recover()
            self.daemons.append(d)
            kills += 1
        try:
            out, err = job.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            job.kill()
            self.fail("fio still running 600 s after the last recovery")
        r = subprocess.CompletedProcess(job.args, job.returncode, out, err)
        self.assertGreaterEqual(kills, 1, "fio ended before the first kill: make it longer")
        self.assertEqual(job.returncode, 0, f"{kills} kills: fio failed:\n{out[-3000:]}\n{err[-2000:]}")
        self.assertEqual(fio_errors(r), [0])
        # A planned hand-over under I/O: the old daemon answers what it has and exits 0.
        job = subprocess.Popen([*fio_base(), f"--filename={d.path}", "--name=again",
                                "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=8M",
                                "--verify=crc32c", "--do_verify=1", "--verify_fatal=1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        run([USERBLK, "handover", str(d.id)], timeout=60)
        self.assertEqual(d.proc.wait(timeout=30), 0, "the old daemon did not exit 0")
        d = d.recover()
        self.daemons.append(d)
        out, err = job.communicate(timeout=600)
        self.assertEqual(job.returncode, 0, f"after the hand-over: fio failed:\n{out[-3000:]}\n{err[-2000:]}")
        self.assertEqual(d.stop(), 0)
        self.assertTrue(device_gone(d.path))

    def test_stalled_daemon_is_caught_by_the_timeout(self):
        self.transport_property("the request timeout")
        timeout = capabilities(self.transport).get("request_timeout", "")
        if timeout.startswith("none"):
            self.skipTest(f"{self.transport} has no request timeout: request_timeout={timeout}")
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
        got = read_one_block(d.path)
        if os.path.exists(d.path):
            self.assertFalse(got, f"I/O after the timeout read {got} bytes")
            self.assertLess(time.monotonic() - t0, 5, "I/O after the timeout did not fail fast")
        self.assertEqual(d.stop(timeout=30), 0)
        self.assertTrue(device_gone(d.path))

    def test_delete_under_load(self):
        self.transport_property("deleting a device under I/O")
        d = self.daemon()
        job = subprocess.Popen([*fio_base(), f"--filename={d.path}", "--name=load",
                                "--rw=randrw", "--bs=4k", "--iodepth=32", "--numjobs=2",
                                "--time_based", "--runtime=60"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        self.assertIsNone(job.poll(), "fio ended before the delete")
        run(d.cli("del"), timeout=60)
        try:
            job.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            job.kill()
            self.fail("fio still running 30 s after the device was deleted")
        self.assertNotEqual(job.returncode, 0, "fio saw no error when its device was deleted")
        self.assertTrue(device_gone(d.path))
        self.assertEqual(d.stop(timeout=30), 0, "the daemon did not exit cleanly after the delete")

    def test_fio_fails_when_the_daemon_stalls_inside_a_data_copy(self):
        """A daemon stalled inside a data copy (its buffer waits on a userfaultfd) or holding
        its tags' pipes: fio gets an error within the request timeout and a margin, the
        device can be deleted, and another device's I/O goes on meanwhile."""
        self.base_transport_only("a daemon stalled in a data copy (userblk_stall_daemon)")
        self.transport_property("a daemon stalled in a data copy (userblk_stall_daemon serves "
                                "no backend)")
        timeout_ms, margin_s = 2000, 10
        stall = subprocess.Popen([STALL_DAEMON, "--transport", self.transport,
                                  "--timeout-ms", str(timeout_ms)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = stall.stdout.readline()
            if stall.poll() == 77 or line.startswith("SKIP:"):
                self.skipTest(line.strip() or "userblk_stall_daemon skipped")
            if len(line.split()) != 2:
                stall.kill()
                self.fail(f"userblk_stall_daemon printed no 'ID PATH': {line!r} "
                          f"{stall.communicate()[1]}")
            sid, spath = int(line.split()[0]), line.split()[1]
            healthy = self.daemon(size="64M", queues=1, depth=8)
            other = subprocess.Popen(
                ["fio", "--output-format=json", "--direct=1", "--ioengine=io_uring",
                 f"--filename={healthy.path}", "--name=other", "--rw=randrw", "--bs=4k",
                 "--iodepth=4", "--size=16M", "--time_based", f"--runtime={margin_s}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            t0 = time.monotonic()
            r = fio(f"--filename={spath}", "--name=stalled", "--rw=write", "--bs=4k",
                    "--size=64k", "--iodepth=1", check=False, timeout=120)
            elapsed = time.monotonic() - t0
            self.assertNotEqual(r.returncode, 0, "fio saw no error from a stalled daemon")
            # The job's own run time: from its first I/O to its error, without fio's start-up,
            # which under TCG and the other device's load takes seconds of its own.
            jobs = fio_json(r).get("jobs", [])
            ran = jobs[0].get("job_runtime", 0) / 1000 if jobs else elapsed
            self.assertTrue(any(job.get("error", 0) for job in jobs), "fio's job saw no error")
            self.assertLess(ran, timeout_ms / 1000 + margin_s,
                            f"fio's job ran {ran:.1f} s against a timeout of {timeout_ms} ms")
            self.assertLess(elapsed, 60, f"fio took {elapsed:.1f} s in all")
            t0 = time.monotonic()
            run([USERBLK, "del", str(sid)], timeout=60)
            took_del = time.monotonic() - t0
            sys.stderr.write(f"[fio's job failed after {ran:.1f} s ({elapsed:.1f} s in all), "
                             f"del took {took_del:.1f} s] ")
            self.assertLess(took_del, margin_s, "DEL_DEV of the stalled device")
            self.assertTrue(device_gone(spath))
            out, err = other.communicate(timeout=120)
            self.assertEqual(other.returncode, 0, f"the other device's fio failed:\n{err[-2000:]}")
            self.assertEqual(healthy.stop(), 0)
        finally:
            if stall.poll() is None:
                stall.stdin.close()
                try:
                    stall.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    stall.kill()
                    stall.wait()

    # -- bad input ---------------------------------------------------------

    def run_uapi_test(self, binary):
        """A GoogleTest program that speaks the uapi itself (no daemon, no backend)."""
        self.transport_property(f"{os.path.basename(binary)} (it speaks the uapi itself, with "
                                "no daemon and no backend)")
        if not os.access(binary, os.X_OK):
            self.fail(f"{binary} is missing: run 'make build'")
        self.base_transport_only(os.path.basename(binary))
        r = run([binary, f"--transport={self.transport}"], check=False, timeout=300)
        if r.returncode == 77:
            self.skipTest(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "skipped")
        self.assertEqual(r.returncode, 0, r.stdout[-6000:] + r.stderr[-3000:])

    def test_bad_input_is_rejected(self):
        self.run_uapi_test(BADINPUT)

    def test_races_stalls_and_stale_answers_at_the_kernel_boundary(self):
        self.run_uapi_test(LIFETIME)

    def test_a_device_with_recovery_holds_io_for_the_next_daemon(self):
        """tests/vm/recovery_test.cpp: held requests reissued under new gens, I/O waiting
        during recovery, the recovery timeout, a daemon dying during recovery (pipe and splice:
        ADD_DEV refuses the feature)."""
        self.run_uapi_test(RECOVERY)

    def test_lent_pages_stay_read_only_and_hold_their_requests(self):
        """tests/vm/lend_test.cpp, once per lending variant (in its file suite): completion
        waits for every lent buffer, no pipe operation writes into a lent page, and a buffer
        kept past the timeout or a daemon's death fails the request, not the kernel."""
        if not self.lends():
            self.skipTest("not a lending variant (--lend on)")
        self.transport_property("lend_test (it speaks the uapi itself, with no backend)")
        if not os.access(LEND, os.X_OK):
            self.fail(f"{LEND} is missing: run 'make build'")
        r = run([LEND, f"--transport={self.transport}"], check=False, timeout=300)
        if r.returncode == 77:
            self.skipTest(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "skipped")
        self.assertEqual(r.returncode, 0, r.stdout[-6000:] + r.stderr[-3000:])


def _key_values(text):
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def capabilities(transport):
    """The key=value lines of `userblk --dump-transport`, as a dict."""
    return _key_values(run([USERBLK, "--dump-transport", transport]).stdout)


def backend_capabilities(backend):
    """The key=value lines of `userblk --dump-backend`, as a dict."""
    return _key_values(run([USERBLK, "--dump-backend", backend]).stdout)


def transports(kind=None):
    """Every registered transport that is not a reference (--transport names those), or, with
    kind, those of that kind (kind= of --dump-transport: userblk, baseline, reference)."""
    r = run([USERBLK, "--list-transports"])
    names = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    if kind is not None:
        return [n for n in names if capabilities(n).get("kind") == kind]
    return [n for n in names if capabilities(n).get("kind") != "reference"]


def reference_plan(name, backend):
    """For a reference: (kernel_only, why it cannot run on backend here or None)."""
    caps = capabilities(name)
    if caps.get("data", "").startswith("none"):
        return False, f"{name} keeps no data ({caps['data']})"
    own = [b for b in caps.get("backends", "").split(",") if b]
    if not own:
        return True, None if backend == "ram" else f"{name} has no backend: it runs in the ram suite"
    if backend not in own:
        return False, f"{name} serves only the backends {', '.join(own)}"
    return False, None


def backend_missing(backend):
    """Why the suite cannot run on backend here, or None."""
    r = run([USERBLK, "--list-backends"])
    names = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    if backend not in names:
        return (f"the {backend} backend is not in this build ({USERBLK} --list-backends: "
                f"{', '.join(names)})")
    if backend == "forward":
        if shutil.which(stores.NBDKIT) is None:
            return "nbdkit is not installed (Debian package nbdkit; make deps)"
        try:
            stores.free_port()
        except OSError as e:
            return f"no TCP on 127.0.0.1 ({e}): is the loopback interface up?"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transport", action="append",
                    help="transport to test (repeatable; default: every registered one)")
    ap.add_argument("--backend", default="ram", choices=BACKENDS,
                    help="where the devices keep their data (default ram)")
    ap.add_argument("-k", dest="pattern", action="append", help="only tests matching this")
    a = ap.parse_args()

    if os.geteuid() != 0:
        print("SKIP: the kernel suite needs root")
        return 77
    if not os.access(USERBLK, os.X_OK):
        print(f"FAIL: {USERBLK} is missing: run 'make build'")
        return 1
    why = backend_missing(a.backend)
    if why:
        print(f"SKIP: {why}")
        return 77
    names = a.transport or transports()
    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    if a.pattern:
        loader.testNamePatterns = [f"*{p}*" for p in a.pattern]
    scratch = tempfile.mkdtemp(prefix=f"userblk-suite-{a.backend}-",
                               dir=os.environ.get("USERBLK_SCRATCH"))
    for variant in names:
        try:
            name, variant_args = bench.parse_variant(variant)
        except bench.BenchError as e:
            print(f"FAIL: {e}")
            return 1
        reference = capabilities(name).get("kind") == "reference"
        kernel_only = False
        if reference:
            kernel_only, why = reference_plan(name, a.backend)
            if why:
                print(f"{name}: skipped: {why}")
                continue
        label = "".join(c if c.isalnum() else "_" for c in variant)
        cls = type(f"Transport_{label}_{a.backend}", (TransportSuite,),
                   {"transport": name, "variant_args": tuple(variant_args),
                    "backend": a.backend, "scratch": scratch, "kernel_only": kernel_only})
        tests = loader.loadTestsFromTestCase(cls)
        if reference:
            tests = [t for t in tests if t._testMethodName in REFERENCE_TESTS]
        suite.addTests(tests)
    if suite.countTestCases() == 0:
        print(f"SKIP: no test of {', '.join(names)} runs with backend {a.backend}")
        shutil.rmtree(scratch, ignore_errors=True)
        return 77
    loaded = load_module()
    try:
        result = unittest.TextTestRunner(verbosity=2).run(suite)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
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
