#!/usr/bin/python3
"""The fault matrix: every fault a transport offers, against the kernel, in the platform.

Runs inside the platform (the VM or a native host), as root:

    harness/platform run -- tests/vm/faults.py --transport copy [--transport ring ...]
                                               [--fault drop] [--seed N] [--backend file ...]

A transport may be a variant (`pipe:lend=on`, as `make bench` takes it: the options go to
`userblk add`). For each fault the transport lists in faults= (`userblk --dump-transport`), a
daemon serves a device on each backend named (default ram; `file` and `forward` for the
lending variants, whose splice reaches the lent pages only towards a file or socket) with
`--fault KIND --fault-seed N` and a request timeout of 2 s, and fio writes and verifies data on
it (crc32c, verify_fatal). It must see I/O errors or correct data, never a verify failure
(silent corruption); it must end within the timeout plus a margin (no hang);
the kernel log after a marker must show no WARNING:, BUG:, Oops, hung task or KASAN; the fault
must have fired; and afterwards the device must go away (by its daemon, or `userblk del`) and
a new device on the same transport must verify clean. docs/faults.md says what each fault does
and what the kernel does about it. Exit status: 0 pass, 1 fail, 77 skip (with the reason).
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from suite import (USERBLK, Daemon, bench, capabilities, device_gone, dmesg, fio,  # noqa: E402
                   fio_json, kmsg, load_module, run, stores, sys_block, variant_lends)

TIMEOUT_MS = 2000
# The longest a fio run may take: its own I/O under TCG, the request timeout, the stall fault
# (twice the timeout plus a second) and a margin.
FIO_LIMIT_S = 60
# fio's error for a verify failure (EILSEQ): the data read back is not what was written.
EILSEQ = 84
# The exit status of a daemon the exit fault ended (kFaultExitStatus in core/fault.h).
FAULT_EXIT = 3


def verify_job(path, name, extra=()):
    """A short verify job: written, then read back and checked (crc32c, first failure fatal)."""
    return [f"--filename={path}", f"--name={name}", "--rw=randwrite", "--bsrange=4k-64k",
            "--iodepth=8", "--numjobs=2", "--size=2M", "--offset_increment=8M",
            "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--group_reporting",
            *extra]


def corrupted(r):
    """Why fio's output shows silent corruption (a verify failure), or None."""
    text = r.stdout + r.stderr
    for needle in ("verify failed", "bad magic header", "verify: bad", "crc32c: verify"):
        if needle in text:
            return f"fio reports a verify failure ({needle!r})"
    try:
        jobs = fio_json(r).get("jobs", [])
    except AssertionError:
        return None
    if any(job.get("error") == EILSEQ for job in jobs):
        return "fio ended with EILSEQ: the data read back is not what was written"
    return None


def daemon_log(d):
    try:
        return d.proc.stderr.read() or ""
    except (OSError, ValueError):
        return ""


class Failure(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Failure(why)


def one_fault(variant, kind, seed, backend, scratch):
    """Runs the matrix cell (variant, kind) on backend; returns a one-line outcome, raises
    Failure."""
    transport, options = bench.parse_variant(variant)
    marker = f"userblk-fault-marker: {variant} {kind} {backend} {os.getpid()} {time.time_ns()}"
    kmsg(marker)
    store = stores.make(backend, "64M", scratch)
    clean = None
    d = Daemon(transport, store, size="64M", queues=2, depth=16,
               extra=[*options, "--timeout-ms", str(TIMEOUT_MS), "--fault", kind,
                      "--fault-seed", str(seed), "--fault-rate", "0.05", "--fault-skip", "16"])
    try:
        t0 = time.monotonic()
        try:
            r = fio(*verify_job(d.path, f"fault-{kind}"), timeout=FIO_LIMIT_S, check=False)
        except subprocess.TimeoutExpired:
            raise Failure(f"fio still running {FIO_LIMIT_S} s into the run: I/O hangs")
        elapsed = time.monotonic() - t0
        why = corrupted(r)
        check(why is None, f"silent corruption: {why}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        outcome = "correct data" if r.returncode == 0 else "I/O errors"
        if variant_lends(options):
            # The cell is about lent buffers only if some were lent before the fault struck.
            lent = sys_block(d.path, "userblk/write_lent_bytes")
            check(lent is None or int(lent) > 0,
                  "a lending device lent no WRITE bytes: the run proves nothing for lending")
            outcome += f", {lent} B lent" if lent is not None else ", lent bytes unread (gone)"
        # The daemon: still serving (the device survived the lies), or ended by the device's
        # death (timeout), or by the exit fault.
        if d.proc.poll() is None:
            code = d.stop(signal.SIGTERM, timeout=30)
        else:
            code = d.proc.returncode
        log = daemon_log(d)
        fired = log.count("fault: ")
        check(fired > 0, f"the {kind} fault never fired: the run proves nothing\n{log[-2000:]}")
        if kind == "exit":
            check(code == FAULT_EXIT, f"the exit fault's daemon exited {code}, not {FAULT_EXIT}")
        if os.path.exists(d.path):
            rd = run([USERBLK, "del", "--transport", transport, str(d.id)], check=False,
                     timeout=60)
            check(rd.returncode == 0 or not os.path.exists(d.path),
                  f"userblk del {d.id} failed: {rd.stderr.strip()}")
        check(device_gone(d.path), f"{d.path} still exists after the daemon and userblk del")
        # A new device on the same transport, variant and backend is clean.
        clean = Daemon(transport, stores.make(backend, "64M", scratch), size="64M", queues=2,
                       depth=16, extra=[*options, "--timeout-ms", str(TIMEOUT_MS)])
        rc = fio(*verify_job(clean.path, "after"), timeout=FIO_LIMIT_S, check=False)
        check(rc.returncode == 0, f"a new device after the fault failed verify:\n"
                                  f"{rc.stdout[-2000:]}\n{rc.stderr[-2000:]}")
        check(clean.stop() == 0, "the new device's daemon did not exit 0")
        check(device_gone(clean.path), f"{clean.path} still exists after SIGTERM")
        return f"{outcome}, fio {elapsed:.1f} s, daemon exit {code}, {fired} fault lines"
    finally:
        for x in (d, clean):
            if x is not None and x.proc.poll() is None:
                x.proc.kill()
                x.proc.wait()
                run([USERBLK, "del", "--transport", transport, str(x.id)], check=False)
        for x in (store, clean.store if clean is not None else None):
            if x is not None:
                x.close()
        bad = dmesg.bad_lines(run(["dmesg"]).stdout, after_marker=marker)
        if bad:
            raise Failure("kernel log after the marker shows a problem:\n" + "\n".join(bad))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transport", required=True, action="append",
                    help="a userblk.ko transport (copy, ring, ...) or a variant of one "
                         "(pipe:lend=on); repeatable, one after another")
    ap.add_argument("--backend", action="append",
                    help="a backend of the devices (ram, file, forward, ...; repeatable, each "
                         "one runs the whole plan; default ram)")
    ap.add_argument("--fault", action="append",
                    help="only this fault (repeatable; default: every one the transport offers)")
    ap.add_argument("--seed", type=int, default=9, help="--fault-seed of every run (default 9)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("SKIP: the fault matrix needs root")
        return 77
    if not os.access(USERBLK, os.X_OK):
        print(f"FAIL: {USERBLK} is missing: run 'make build'")
        return 1
    plan = []
    for transport in a.transport:
        try:
            name, _ = bench.parse_variant(transport)
        except bench.BenchError as e:
            print(f"FAIL: {e}")
            return 1
        offered = [f for f in capabilities(name).get("faults", "").split(",") if f]
        if not offered:
            print(f"SKIP {transport}: it offers no faults (no faults= in --dump-transport)")
            continue
        plan += [(transport, backend, kind) for backend in (a.backend or ["ram"])
                 for kind in (a.fault or offered)]
    if not plan:
        print("SKIP: no transport named offers a fault")
        return 77
    loaded = load_module()
    scratch = tempfile.mkdtemp(prefix="userblk-faults-", dir=os.environ.get("USERBLK_SCRATCH"))
    failed = 0
    t_all = time.monotonic()
    try:
        for transport, backend, kind in plan:
            t0 = time.monotonic()
            cell = f"{transport} {kind}" + (f" on {backend}" if backend != "ram" else "")
            try:
                what = one_fault(transport, kind, a.seed, backend, scratch)
                print(f"PASS {cell}: {what} [{time.monotonic() - t0:.1f} s]", flush=True)
            except (Failure, AssertionError, stores.StoreError) as e:
                failed += 1
                print(f"FAIL {cell}: {e} [{time.monotonic() - t0:.1f} s]", flush=True)
    finally:
        if loaded:
            r = run(["rmmod", "userblk"], check=False)
            if r.returncode != 0:
                print(f"FAIL: rmmod userblk after the matrix: {r.stderr.strip()}")
                failed += 1
    print(f"{len(plan) - failed} passed, {failed} failed ({', '.join(a.transport)} on "
          f"{', '.join(a.backend or ['ram'])}, seed "
          f"{a.seed}, {time.monotonic() - t_all:.1f} s)")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
