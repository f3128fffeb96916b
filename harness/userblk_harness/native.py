"""The native platform: the host's own kernel, when it can load our module."""

import os
import subprocess
import sys
import time

from . import dmesg

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def kdir():
    return f"/lib/modules/{os.uname().release}/build"


def why_not():
    """The reasons this host cannot run userblk natively; empty when it can."""
    reasons = []
    if os.geteuid() != 0:
        reasons.append("not running as root (loading a module needs root)")
    if not os.path.exists("/proc/modules"):
        reasons.append(f"the running kernel {os.uname().release} has no module support "
                       "(CONFIG_MODULES is off: /proc/modules is missing)")
    else:
        try:
            with open("/proc/sys/kernel/modules_disabled") as f:
                if f.read().strip() == "1":
                    reasons.append("module loading is disabled (kernel.modules_disabled=1)")
        except OSError:
            pass
    if not os.path.isfile(os.path.join(kdir(), "Makefile")):
        reasons.append(f"no headers for the running kernel: {kdir()} is missing "
                       f"(Debian: apt-get install linux-headers-{os.uname().release})")
    return reasons


def run(argv, env=None, quiet=False):
    """Run argv on the host; fail if the kernel log after our marker shows a bug."""
    reasons = why_not()
    if reasons:
        print("native: this host cannot run userblk: " + "; ".join(reasons), file=sys.stderr)
        return 2
    marker = f"userblk-native-run-{os.getpid()}-{time.time_ns()}"
    with open("/dev/kmsg", "w") as k:
        k.write(f"{marker}\n")
    full_env = dict(os.environ, USERBLK_PLATFORM="native",
                    USERBLK_KMOD_DIR=os.path.join(TOP, "kmod"), **(env or {}))
    if not quiet:
        print(f"native: kernel {os.uname().release}", file=sys.stderr)
    status = subprocess.run(argv, env=full_env).returncode
    log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    problems = dmesg.bad_lines(log, after_marker=marker)
    if problems:
        print("native: the kernel log shows a problem:", file=sys.stderr)
        for line in problems[:20]:
            print(f"  > {line}", file=sys.stderr)
        if status == 0:
            status = 1
    return status
