"""CPU accounting for a cell: the whole system, split into fio, the daemon, the NBD server
(forward backend) and the rest, and context switches.

While fio runs, a sampler records, every `interval` seconds and with a wall-clock time
stamp, the CPU time of every process (/proc/PID/stat, utime + stime of all its threads),
/proc/stat's busy and idle ticks and its context-switch counter. fio measures over a
window that ends when it writes its report (`timestamp_ms` in its JSON) and lasts its
runtime; the samples inside that window give CPU *rates* (CPU seconds per second), which
divided by fio's IOPS give CPU per I/O. fio's start-up, ramp and teardown stay out.

Whole system = the sum over all processes, less the harness's own sampling (recorded
apart). /proc/stat's busy time is recorded beside it (cpu_stat_us_per_io) but is not the
headline number: it is sampled at timer ticks, and under TCG ticks are delivered late or
lost while the guest runs long kernel paths, so it undercounts (by 30 % for a userblk QD1
read load measured here, less than fio and the daemon alone), while a process's utime +
stime is its exact run time (the scheduler's sum_exec_runtime) apportioned by ticks.
"""

import os
import time

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# /proc/stat "cpu" columns: user nice system idle iowait irq softirq steal guest guest_nice.
# guest and guest_nice are already counted in user and nice.
_BUSY = (0, 1, 2, 5, 6, 7)
_IDLE = (3, 4)


def parse_proc_stat(text):
    """-> dict(busy_ticks, idle_ticks, ctxt) from the text of /proc/stat."""
    busy = idle = ctxt = None
    for line in text.splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:]]
            v += [0] * (10 - len(v))
            busy = sum(v[i] for i in _BUSY)
            idle = sum(v[i] for i in _IDLE)
        elif line.startswith("ctxt "):
            ctxt = int(line.split()[1])
    if busy is None:
        raise ValueError("/proc/stat has no 'cpu' line")
    return {"busy_ticks": busy, "idle_ticks": idle, "ctxt": ctxt or 0}


def parse_pid_stat(text):
    """-> utime+stime ticks of a process (all its threads) from /proc/PID/stat's text."""
    return parse_pid_stat_ppid(text)[1]


def parse_pid_stat_ppid(text):
    """-> (parent pid, utime+stime ticks) from /proc/PID/stat's text."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state), rest[1] field 4 (ppid); utime and stime are fields 14, 15.
    return int(rest[1]), int(rest[11]) + int(rest[12])


def tree_ticks(pid, procs, ppids):
    """Ticks of pid and all its descendants (None if pid is gone)."""
    if pid not in procs:
        return None
    children = {}
    for p, parent in ppids.items():
        children.setdefault(parent, []).append(p)
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += procs.get(p, 0)
        todo.extend(children.get(p, ()))
    return total


class Sampler:
    """Takes samples cheaply: the /proc/PID/stat files stay open between samples (opening
    them anew costs about 5 times more under TCG, and the sampler's CPU perturbs the cell)."""

    def __init__(self, roles, proc="/proc", trees=("daemon",)):
        self.roles = dict(roles)     # role -> pid, e.g. {"fio": 123, "daemon": 45}
        # Roles that count their process's descendants too: the daemon's children serve with
        # it (nbdkit started by `userblk add` for the nbdkit reference, nbd's NBD_DO_IT child).
        self.trees = set(trees)
        self.proc = proc
        self.fds = {}
        self.ppids = {}
        self.stat_fd = os.open(f"{proc}/stat", os.O_RDONLY)

    def process_ticks(self):
        """{pid: utime+stime ticks} of every process."""
        out = {}
        for name in os.listdir(self.proc):
            if not name.isdigit():
                continue
            pid = int(name)
            fd = self.fds.get(pid)
            if fd is None:
                try:
                    fd = self.fds[pid] = os.open(f"{self.proc}/{name}/stat", os.O_RDONLY)
                except OSError:
                    continue
            try:
                self.ppids[pid], out[pid] = parse_pid_stat_ppid(os.pread(fd, 4096, 0))
            except (OSError, ValueError, IndexError):
                os.close(self.fds.pop(pid))
        for pid in [p for p in self.fds if p not in out]:
            os.close(self.fds.pop(pid))
        for pid in [p for p in self.ppids if p not in out]:
            del self.ppids[pid]
        return out

    def sample(self):
        """One sample: wall time, /proc/stat counters, all processes' CPU ticks, and the
        ticks of each role (None if that process is gone)."""
        s = parse_proc_stat(os.pread(self.stat_fd, 1 << 16, 0).decode())
        procs = self.process_ticks()
        s["t"] = time.time()
        s["all_ticks"] = sum(procs.values())
        s["procs"] = procs
        for role, pid in self.roles.items():
            if not pid:
                s[role] = None
            elif role in self.trees:
                s[role] = tree_ticks(pid, procs, self.ppids)
            else:
                s[role] = procs.get(pid)
        return s

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        os.close(self.stat_fd)


def compact(s, roles):
    """A sample without its per-process table, for the record."""
    return {k: s.get(k) for k in ("t", "busy_ticks", "idle_ticks", "ctxt", "all_ticks", *roles)}


def window(samples, end_s, length_s):
    """The first and last samples inside [end_s - length_s, end_s], or None if fewer than 2."""
    if end_s is None or not length_s:
        return None
    start = end_s - length_s
    inside = [s for s in samples if start - 1e-6 <= s["t"] <= end_s + 1e-6]
    if len(inside) < 2:
        return None
    return inside[0], inside[-1]


def _all_delta(first, last):
    """CPU ticks of all processes between two samples; a process born in between counts
    from zero, one that exited in between is lost (none should during a cell)."""
    if "procs" in first and "procs" in last:
        a = first["procs"]
        return sum(t - a.get(pid, 0) for pid, t in last["procs"].items())
    return last["all_ticks"] - first["all_ticks"]


def per_io(first, last, iops, ncpu, clk_tck=CLK_TCK):
    """CPU and context-switch numbers per I/O between two samples, given fio's IOPS.

    cpu_us_per_io: all processes but the harness; cpu_fio_us_per_io, cpu_daemon_us_per_io
    (the daemon and its children, e.g. the nbdkit the nbdkit reference starts; None without
    a daemon pid), cpu_server_us_per_io (the storage server the harness
    started for the device, e.g. nbdkit for the forward backend; None without one);
    cpu_other_us_per_io: the rest (kernel threads, other processes);
    cpu_harness_us_per_io: the sampler itself, left out of the above;
    cpu_stat_us_per_io: /proc/stat busy time (the harness included); cpu_stat_coverage:
    the share of the expected timer ticks /proc/stat counted; cpu_busy_cores; ctxsw_per_io.
    """
    dt = last["t"] - first["t"]
    if dt <= 0 or not iops:
        return None

    def rate(ticks):
        return None if ticks is None else ticks / clk_tck / dt   # CPU seconds per second

    def role(key):
        a, b = first.get(key), last.get(key)
        return None if a is None or b is None else rate(b - a)

    def us(r):
        return None if r is None else r / iops * 1e6

    harness = role("harness") or 0.0
    total = rate(_all_delta(first, last)) - harness
    fio = role("fio")
    daemon = role("daemon")
    server = role("server")
    other = None if fio is None else total - fio - (daemon or 0.0) - (server or 0.0)
    stat_busy = rate(last["busy_ticks"] - first["busy_ticks"])
    ticks = (last["busy_ticks"] - first["busy_ticks"]) + (last["idle_ticks"] - first["idle_ticks"])
    return {
        "window_s": dt,
        "cpu_busy_cores": total,
        "cpu_us_per_io": us(total),
        "cpu_fio_us_per_io": us(fio),
        "cpu_daemon_us_per_io": us(daemon),
        "cpu_server_us_per_io": us(server),
        "cpu_other_us_per_io": us(other),
        "cpu_harness_us_per_io": us(harness),
        "cpu_stat_us_per_io": us(stat_busy),
        "cpu_stat_coverage": ticks / (dt * ncpu * clk_tck) if ncpu else None,
        "ctxsw_per_io": (last["ctxt"] - first["ctxt"]) / dt / iops,
    }
