#!/usr/bin/python3
"""Run userblk_fuzz (or, with --concurrent, userblk_race_fuzz) for each transport named
inside the platform and judge the kernel after each.

Runs inside the platform (the VM or a native host), as root:

    harness/platform run -- tests/vm/fuzz.py [--transport copy --transport ring ...]
        --iterations 1500 [--seed S] [--concurrent]

Without --transport, every userblk.ko transport of the registry (kind=userblk).

Loads userblk.ko from USERBLK_KMOD_DIR unless it is loaded, writes a marker into the kernel
log, runs $USERBLK_BUILD/tests/vm/userblk_fuzz, unloads the module again (a reference the
fuzz left behind makes rmmod fail) and fails if the fuzzer hung, crashed or failed a check,
or if WARNING:, BUG:, Oops, a hung task, KASAN or another sign of a kernel bug appears in the
log after the marker. Every failure prints the seed and the command that reruns it.
Exit status: 0 pass, 1 fail, 77 skip (with the reason printed).
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("USERBLK_BUILD", os.path.join(TOP, "build"))
FUZZ = os.path.join(BUILD, "tests", "vm", "userblk_fuzz")
RACE_FUZZ = os.path.join(BUILD, "tests", "vm", "userblk_race_fuzz")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from suite import dmesg, kmsg, load_module, transports  # noqa: E402  (the suite's helpers)


def unload_module():
    """rmmod userblk, retrying a moment: None if it went, else the error."""
    err = ""
    for _ in range(20):
        r = subprocess.run(["rmmod", "userblk"], capture_output=True, text=True)
        if r.returncode == 0:
            return None
        err = r.stderr.strip()
        time.sleep(0.25)
    return err


def fuzz_one(fuzz, transport, a, seed):
    """One run of the fuzzer on transport: 0 pass, 1 fail, 77 skip."""
    name = os.path.basename(fuzz)
    flag = " --concurrent" if a.concurrent else ""
    rerun = (f"make fuzz TRANSPORT={transport} SEED={seed} ITER={a.iterations}"
             f"{' CONCURRENT=1' if a.concurrent else ''}  (in the guest: {fuzz} --transport "
             f"{transport} --seed {seed} --iterations {a.iterations}"
             f"{'' if a.concurrent else ' --trace'})")
    loaded = load_module()
    marker = f"userblk-test-marker: fuzz{flag} {transport} seed {seed} {os.getpid()} {time.time_ns()}"
    kmsg(marker)
    argv = [fuzz, "--transport", transport, "--seed", str(seed),
            "--iterations", str(a.iterations), "--seconds", str(a.seconds)]
    print(" ".join(argv), flush=True)
    problems = []
    t0 = time.monotonic()
    # The fuzzer bounds each of its syscalls itself (exit 3); this bound is for the case where
    # it cannot even do that (a task stuck for good in the kernel).
    try:
        r = subprocess.run(argv, timeout=a.seconds + 240)
        status = r.returncode
    except subprocess.TimeoutExpired:
        status = None
        problems.append(f"{name} did not exit within {a.seconds + 240:.0f} s")
    took = time.monotonic() - t0
    if status is not None and status < 0:
        problems.append(f"{name} was killed by {signal.Signals(-status).name}")
    elif status == 3:
        problems.append("a syscall hung (see HANG: above)")
    elif status == 77:
        print(f"SKIP: {name} skipped")
        return 77
    elif status not in (0, None):
        problems.append(f"{name} exited {status}")
    if loaded and status is not None:
        err = unload_module()
        if err:
            problems.append(f"rmmod userblk after the fuzz failed (a reference left behind?): {err}")
    log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    bad = dmesg.bad_lines(log, after_marker=marker)
    if bad:
        problems.append("kernel log after the marker shows a problem:\n  " + "\n  ".join(bad))
    print(f"fuzz{flag} {transport}: seed {seed}, {a.iterations} iterations asked, {took:.1f} s")
    if problems:
        print(f"FAIL: fuzz{flag} {transport} seed {seed}: " + "\n".join(problems))
        print(f"rerun: {rerun}")
        if bad:
            # The whole log after the marker: what led to the first bad line.
            lines = log.splitlines()
            idx = max(i for i, line in enumerate(lines) if marker in line)
            print("kernel log after the marker (last 200 lines):")
            print("\n".join(lines[idx + 1:][-200:]))
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transport", action="append",
                    help="a userblk.ko transport, repeatable (default: every one)")
    ap.add_argument("--iterations", type=int, default=1500,
                    help="actions (default 1500); --concurrent: control operations in all")
    ap.add_argument("--seconds", type=float, default=45,
                    help="stop the actions after this many seconds (default 45)")
    ap.add_argument("--seed", type=int, help="the fuzzer's seed (default: a random one, printed)")
    ap.add_argument("--concurrent", action="store_true",
                    help="userblk_race_fuzz: the control path from 8 threads at once")
    a = ap.parse_args()

    if os.geteuid() != 0:
        print("SKIP: the fuzzer needs root")
        return 77
    fuzz = RACE_FUZZ if a.concurrent else FUZZ
    if not os.access(fuzz, os.X_OK):
        print(f"FAIL: {fuzz} is missing: build the {os.path.basename(fuzz)} target of {BUILD}")
        return 1
    known = transports(kind="userblk")
    names = a.transport or known
    unknown = [t for t in names if t not in known]
    if unknown:
        print(f"FAIL: not a userblk.ko transport: {', '.join(unknown)} (they are: "
              f"{', '.join(known)})")
        return 2
    seed = a.seed if a.seed is not None else random.randrange(1, 1 << 48)
    results = [fuzz_one(fuzz, t, a, seed) for t in names]
    if 1 in results:
        return 1
    if all(r == 77 for r in results):
        return 77
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
