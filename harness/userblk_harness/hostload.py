"""Watching the host while the VM runs: CPU taken by other host processes and by the
hypervisor below the host (steal), which a guest cannot see but which slows it.

Under TCG with idle=poll, qemu's vCPU threads spin and use the host's CPUs all the time;
anything else running on the host takes CPU from the guest, and a transport that needs
both vCPUs for each I/O (a wake-up of the daemon) suffers most. The monitor samples the
host's /proc/stat and qemu's /proc/PID/stat every `interval` seconds; finish() attaches
the mean over each cell's interval to the cell (host_other_cores, host_steal_cores).
"""

import os
import threading
import time

from .cpuacct import CLK_TCK, parse_pid_stat


def _host_stat():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    v += [0] * (10 - len(v))
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    return busy, v[7]          # busy without steal, steal


def _children_named(parent, prefix):
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                text = f.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        if ppid == parent and comm.startswith(prefix):
            pids.append(int(name))
    return pids


def _ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return parse_pid_stat(f.read())
    except (OSError, ValueError, IndexError):
        return None


class HostMonitor:
    """Samples in a thread until stop(); .samples = [[t, other_cores, steal_cores, vm_cores]]."""

    def __init__(self, interval=1.0, vm_prefix="qemu"):
        self.interval = interval
        self.vm_prefix = vm_prefix
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        return self.samples

    def _run(self):
        prev = None
        vm_pid = None
        me = os.getpid()
        while not self._stop.is_set():
            try:
                if vm_pid is None or _ticks(vm_pid) is None:
                    found = _children_named(me, self.vm_prefix)
                    vm_pid = found[0] if found else None
                busy, steal = _host_stat()
                vm = _ticks(vm_pid) if vm_pid else None
                own = _ticks(me)
                now = time.time()
                if prev is not None and vm is not None and prev[3] is not None:
                    dt = now - prev[0]
                    d_vm = vm - prev[3]
                    d_own = (own or 0) - (prev[4] or 0)
                    other = (busy - prev[1] - d_vm - d_own) / CLK_TCK / dt
                    self.samples.append([now, max(other, 0.0), (steal - prev[2]) / CLK_TCK / dt,
                                         d_vm / CLK_TCK / dt])
                prev = (now, busy, steal, vm, own)
            except (OSError, ValueError):
                pass
            self._stop.wait(self.interval)


def mean_over(samples, start, end):
    """(mean other cores, mean steal cores) of the samples whose interval ends in
    [start, end + 1 s], or (None, None)."""
    inside = [s for s in samples if start <= s[0] <= end + 1.0]
    if not inside:
        return None, None
    return (sum(s[1] for s in inside) / len(inside), sum(s[2] for s in inside) / len(inside))
