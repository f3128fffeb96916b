"""The guest-side runner: runs the cells of a plan on the platform (in the VM, or natively).

    harness/harness run-cells RUN_DIR

Reads RUN_DIR/plan.json, loads userblk.ko if needed, and runs every cell that has no
record yet, in plan order. A cell: make the backend's store if it needs one (stores.py: a
backing file for `file`, an nbdkit server for `forward`), create the device with `userblk
add` (in the foreground, so its PID is the daemon's), set its scheduler to none, snapshot
the daemon's statistics (SIGUSR1), run fio while sampling CPU counters, snapshot again,
delete the device (SIGTERM), remove the store, and write cell.json. A cell that fails is
recorded with its reason and the run goes on; a failed data verification says so first.
One progress line per cell goes to stdout.
"""

import errno
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from . import cpuacct, daemonstats, dmesg, fioresult, kernelcopies, kmem, results, stores
from .say import logger
from .workloads import WORKLOADS_DIR
from .workloads import parse as parse_workload

CONTROL = "/dev/userblk-control"
READY_TIMEOUT_S = 60        # userblk add must print "ID PATH" within this
STOP_TIMEOUT_S = 30         # and exit within this after SIGTERM
SNAPSHOT_TIMEOUT_S = 10     # the statistics file must appear within this after SIGUSR1
VERIFY_TIMEOUT_S = 600


log = logger("bench", stdout=True)


def iso(t=None):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t if t is not None else time.time()))


def fmt_duration(s):
    s = max(0, int(round(s)))
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def si(v):
    if v is None:
        return "-"
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.1f}{suffix}"
    return f"{v:.0f}"


class CellFailed(Exception):
    pass


class CellSkipped(Exception):
    pass


# --- the kernel log ------------------------------------------------------------------------

class KernelLog:
    """New kernel log lines since the last call, read from /dev/kmsg without a subprocess."""

    def __init__(self):
        try:
            self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.fd = None

    def new_lines(self):
        lines = []
        if self.fd is None:
            return lines
        while True:
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:   # records were overwritten: go on
                    continue
                break
            if not rec:
                break
            text = rec.decode(errors="replace")
            head, _, msg = text.partition(";")
            lines.append(msg.split("\n", 1)[0])
        return lines


# --- the device ----------------------------------------------------------------------------

class Device:
    """A device made and served by `userblk add` in the foreground."""

    def __init__(self, cli, dev, settings, workdir, cell_dir, store=None):
        self.kind = dev.get("kind", "userblk")
        self.has_stats = self.kind != "reference"
        self.base = dev.get("base", dev["transport"])
        # `userblk del --transport T ID`: ids are per transport (ublk and nbd have their own).
        self.deletable = dev.get("deletable", self.kind != "reference")
        self.stats_path = os.path.join(workdir, "stats.json")
        self.argv = [cli, "add", "--transport", dev.get("base", dev["transport"]),
                     *dev.get("options", [])]
        if dev["backend"] != results.NO_BACKEND:
            self.argv += ["--backend", store.spec if store else dev["backend"]]
        # A variant's own geometry (pipe:queues=2:depth=128) replaces the run's.
        options = dev.get("options", [])
        self.argv += ["--size", settings["size"]]
        for flag in ("queues", "depth"):
            if f"--{flag}" not in options:
                self.argv += [f"--{flag}", str(settings[flag])]
        self.nofile = settings.get("nofile")
        if self.has_stats:
            self.argv += ["--stats-json", self.stats_path]
        self.log_path = os.path.join(cell_dir, "daemon.log")
        self.proc = None
        self.id = self.path = self.name = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _stderr_tail(self, n=6):
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [x.rstrip() for x in f if x.strip()]
            return " | ".join(lines[-n:])
        except OSError:
            return ""

    def fds(self):
        """How many fds the daemon holds, or None."""
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except (OSError, TypeError):
            return None

    def start(self):
        t0 = time.monotonic()
        if self.nofile:
            # The open-files limit the run asked for (--nofile), soft and hard, as a service
            # manager would set it (a pipe per tag takes 2 fds a tag). Set on the runner, which
            # is root in the guest, so the daemon inherits it: no code runs between fork and
            # exec.
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
            except (ValueError, OSError) as e:
                raise CellFailed(f"cannot set the open-files limit to {self.nofile} (--nofile): "
                                 f"{e}")
        self._log = open(self.log_path, "w")
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=self._log, bufsize=0)
        except OSError as e:
            raise CellFailed(f"cannot run {self.argv[0]}: {e}")
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise CellFailed(f"userblk add printed no 'ID PATH' within {READY_TIMEOUT_S} s")
            r, _, _ = select.select([fd], [], [], min(left, 0.5))
            if r:
                data = os.read(fd, 4096)
                if not data:
                    break
                buf += data
            elif self.proc.poll() is not None:
                break
        line = buf.decode(errors="replace").strip().splitlines()
        fields = line[0].split() if line else []
        if len(fields) != 2 or not fields[0].isdigit():
            status = self.proc.wait()
            self._log.flush()
            why = self._stderr_tail() or f"printed {buf.decode(errors='replace')!r}"
            raise CellFailed(f"userblk add failed (exit {status}): {why}")
        self.id, self.path = int(fields[0]), fields[1]
        deadline = time.monotonic() + 10
        while not os.path.exists(self.path):
            if time.monotonic() > deadline:
                raise CellFailed(f"userblk add printed {self.path}, which did not appear "
                                 "within 10 s")
            time.sleep(0.05)
        self.name = os.path.basename(os.path.realpath(self.path))
        return time.monotonic() - t0

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def death(self):
        rc = self.proc.returncode
        if rc is None:
            return None
        how = f"was killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with status {rc}"
        tail = self._stderr_tail()
        what = f"the daemon (userblk add, pid {self.proc.pid}) {how}"
        return f"{what}: {tail}" if tail else what

    def snapshot(self, dest):
        """Ask for the statistics (SIGUSR1), wait for the file, move it to dest, return it."""
        if not self.has_stats:
            return None
        try:
            os.unlink(self.stats_path)
        except FileNotFoundError:
            pass
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
        while True:
            if os.path.exists(self.stats_path):
                doc = None
                try:
                    with open(self.stats_path) as f:
                        doc = json.load(f)
                except ValueError:
                    pass
                if doc is not None:
                    shutil.move(self.stats_path, dest)
                    return doc
            if self.proc.poll() is not None:
                if self.proc.returncode == -signal.SIGUSR1:
                    raise CellFailed("the daemon was killed by SIGUSR1: this userblk does not "
                                     "write statistics snapshots on SIGUSR1 (rebuild it: "
                                     "make build)")
                raise CellFailed(self.death())
            if time.monotonic() > deadline:
                raise CellFailed(f"no statistics in {self.stats_path} within "
                                 f"{SNAPSHOT_TIMEOUT_S} s of SIGUSR1")
            time.sleep(0.02)

    def stop(self, final_stats=None):
        """SIGTERM, wait; returns the exit status. Kills and deletes the device if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
                raise CellFailed(f"the daemon did not exit within {STOP_TIMEOUT_S} s of SIGTERM")
        self._log.close()
        if final_stats and self.has_stats and os.path.exists(self.stats_path):
            shutil.move(self.stats_path, final_stats)
        return self.proc.returncode

    def remove_leftover(self):
        """After a failure: delete the device if its daemon died and left it behind."""
        if self.id is not None and self.deletable and self.path and os.path.exists(self.path):
            r = subprocess.run(self.del_argv(), capture_output=True, text=True)
            return r.returncode == 0
        return True

    def del_argv(self):
        return [self.argv[0], "del", "--transport", self.base, str(self.id)]

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.id is not None and self.deletable:
            subprocess.run(self.del_argv(), capture_output=True)
        try:
            self._log.close()
        except (AttributeError, OSError):
            pass


def _read_sys(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _num(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return v


def prepare_queue(name):
    """Set the scheduler to none; return the queue settings that change results."""
    q = f"/sys/block/{name}/queue"
    sched = _read_sys(f"{q}/scheduler")
    if sched is not None and "[none]" not in sched and "none" in sched.split():
        try:
            with open(f"{q}/scheduler", "w") as f:
                f.write("none")
        except OSError:
            pass
        sched = _read_sys(f"{q}/scheduler")
    if sched and "[" in sched:
        sched = sched[sched.index("[") + 1:sched.index("]")]
    info = {"scheduler": sched}
    for attr in ("max_sectors_kb", "max_hw_sectors_kb", "nr_requests", "logical_block_size",
                 "physical_block_size", "rotational", "nomerges", "io_poll", "write_cache"):
        info[attr] = _num(_read_sys(f"{q}/{attr}"))
    try:
        info["nr_hw_queues"] = len(os.listdir(f"/sys/block/{name}/mq"))
    except OSError:
        info["nr_hw_queues"] = None
    return info


# --- one cell ------------------------------------------------------------------------------

class ExitWaiter:
    """Waits for a child with a timeout without waking up in between (a pidfd), unlike
    Popen.wait(timeout), which polls every few milliseconds and so adds CPU to the cell."""

    def __init__(self, proc):
        self.proc = proc
        try:
            self.fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self.fd = None

    def wait(self, timeout):
        """True once the child has exited (and is reaped)."""
        if self.fd is not None:
            select.select([self.fd], [], [], timeout)
            return self.proc.poll() is not None
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def run_fio(cell_dir, workload, dev_path, settings, pids, interval):
    """Run fio for a workload on dev_path; return (argv, env, samples, returncode, pid)."""
    jobfile, section = workload.job()
    env_vars = workload.env(dev_path, settings["size"], _num_str(settings["runtime_s"]),
                            _num_str(settings["ramp_s"]))
    argv = ["fio", "--output-format=json", f"--output={os.path.join(cell_dir, 'fio.json')}",
            "--eta=never", f"--section={section}", jobfile]
    timeout = (VERIFY_TIMEOUT_S if not workload.time_based
               else settings["runtime_s"] + settings["ramp_s"] + 60)
    samples = []
    with open(os.path.join(cell_dir, "fio.log"), "w") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=dict(os.environ, **env_vars))
        sampler = cpuacct.Sampler(dict(pids, fio=proc.pid, harness=os.getpid()))
        waiter = ExitWaiter(proc)
        deadline = time.monotonic() + timeout
        next_t = time.monotonic()
        try:
            while True:
                try:
                    samples.append(sampler.sample())
                except OSError:
                    pass
                next_t += interval
                if waiter.wait(max(next_t - time.monotonic(), 0.0)):
                    break
                if time.monotonic() > deadline:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    raise CellFailed(f"fio did not finish within {timeout:.0f} s")
        finally:
            sampler.close()
            waiter.close()
    return argv, env_vars, samples, proc.returncode, proc.pid


def precondition(cell_dir, dev_path, settings):
    """Write the whole device once (workloads/precondition.fio); -> seconds it took."""
    t0 = time.monotonic()
    argv = ["fio", "--output-format=json",
            f"--output={os.path.join(cell_dir, 'precondition.json')}", "--eta=never",
            os.path.join(WORKLOADS_DIR, "precondition.fio")]
    with open(os.path.join(cell_dir, "precondition.log"), "w") as out:
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                               env=dict(os.environ, DEV=dev_path, SIZE=settings["size"]),
                               timeout=VERIFY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CellFailed(f"preconditioning (writing the device once) took over "
                             f"{VERIFY_TIMEOUT_S} s")
    if r.returncode != 0:
        raise CellFailed(f"preconditioning (writing the device once) failed: fio exited with "
                         f"status {r.returncode}; see precondition.log")
    return time.monotonic() - t0


def _num_str(v):
    return str(int(v)) if float(v).is_integer() else str(v)


# What fio prints when a block read back is not what was written (crc32c: verify failed at
# file ... offset ..., verify: bad magic header ..., ...).
_VERIFY_ERRORS = ("verify failed", "verify: bad", "verify type mismatch", "bad magic header",
                  "bad header")


def verify_errors(cell_dir):
    """fio's reports of data that failed verification, from the cell's fio.log."""
    try:
        with open(os.path.join(cell_dir, "fio.log"), errors="replace") as f:
            return [x.strip() for x in f if any(e in x for e in _VERIFY_ERRORS)]
    except OSError:
        return []


def _fio_failure(cell_dir, rc):
    try:
        with open(os.path.join(cell_dir, "fio.log"), errors="replace") as f:
            lines = [x.strip() for x in f if x.strip()]
    except OSError:
        lines = []
    bad = verify_errors(cell_dir)
    if bad:
        more = f" (and {len(bad) - 2} more)" if len(bad) > 2 else ""
        return (f"DATA VERIFICATION FAILED: the device returned other data than was written "
                f"(fio exited with status {rc}): {' | '.join(bad[:2])}{more}; see fio.log")
    tail = " | ".join(lines[-4:])
    return f"fio exited with status {rc}" + (f": {tail}" if tail else "")


def run_cell(cell, plan, run_dir, klog):
    settings = plan["settings"]
    dev_spec = next(d for d in plan["devices"]
                    if d["transport"] == cell["transport"] and d["backend"] == cell["backend"])
    workload = parse_workload(cell["workload"])
    cdir = os.path.join(run_dir, cell["dir"])
    os.makedirs(cdir, exist_ok=True)
    rec = {
        "schema": results.CELL_SCHEMA, "index": cell["index"], "transport": cell["transport"],
        "backend": cell["backend"], "workload": cell["workload"], "rep": cell["rep"],
        "status": "failed", "reason": None, "started": iso(), "ended": None, "seconds": None,
        "started_epoch": time.time(), "ended_epoch": None,
        "workload_params": {"rw": workload.rw, "mix_read_pct": workload.mix_read or None,
                            "bs_bytes": workload.bs_bytes, "iodepth": workload.iodepth,
                            "jobs": workload.jobs,
                            "runtime_s": settings["runtime_s"] if workload.time_based else None,
                            "ramp_s": settings["ramp_s"] if workload.time_based else None},
        "device": None, "commands": {}, "metrics": {}, "fio": None, "cpu": None,
        "daemon": None, "kernel_copies": None, "kernel_log": [], "warnings": [],
    }
    t0 = time.monotonic()
    klog.new_lines()
    workdir = tempfile.mkdtemp(prefix="userblk-bench-")
    device = store = None
    try:
        if workload.rw == "verify" and not dev_spec.get("stores_data", True):
            raise CellSkipped(f"{cell['transport']}/{cell['backend']} stores no data: "
                              "nothing to verify")
        if dev_spec.get("kind") != "reference" and plan.get("_module_error"):
            raise CellFailed(plan["_module_error"])
        if dev_spec["backend"] != results.NO_BACKEND:
            try:
                store = stores.make(dev_spec["backend"], settings["size"], workdir, cdir,
                                    settings["cli"])
            except stores.StoreError as e:
                raise CellFailed(f"{dev_spec['backend']} backend: {e}")
            if store.server_argv:
                rec["commands"]["server"] = store.server_argv
        device = Device(settings["cli"], dev_spec, settings, workdir, cdir, store)
        rec["commands"]["device"] = device.argv
        mem_before = kmem.snapshot()
        setup_s = device.start()
        mem_ready = kmem.snapshot()
        rec["device"] = {"id": device.id, "path": device.path, "name": device.name,
                         "daemon_pid": device.pid, "setup_s": setup_s, "fds": device.fds(),
                         "kernel_memory": {"setup": kmem.delta(mem_before, mem_ready)},
                         "queue": prepare_queue(device.name),
                         "store": store.describe() if store else None}
        if settings.get("precondition") and dev_spec.get("stores_data"):
            rec["device"]["precondition_s"] = precondition(cdir, device.path, settings)
        before = device.snapshot(os.path.join(cdir, "stats-before.json"))
        copies_before = kernelcopies.read(device.name)
        pids = {"daemon": device.pid, "server": store.server_pid if store else None}
        roles = ("fio", "daemon", "server", "harness")
        argv, env_vars, samples, rc, fio_pid = run_fio(
            cdir, workload, device.path, settings, pids, settings["sample_interval_s"])
        rec["commands"]["fio"] = argv
        rec["commands"]["fio_env"] = env_vars
        died = None if device.alive() else device.death()
        after = copies_after = None
        if device.alive():
            after = device.snapshot(os.path.join(cdir, "stats-after.json"))
            copies_after = kernelcopies.read(device.name)
            rec["device"]["kernel_memory"]["loaded"] = kmem.delta(mem_before, kmem.snapshot())
        if died:
            raise CellFailed(f"{died} (during fio)")
        if store and store.server_pid and not store.alive():
            raise CellFailed(f"the {store.backend} backend's server ({store.server_argv[0]}, "
                             f"pid {store.server_pid}) died during fio: {store.log_tail()}")
        if verify_errors(cdir):
            rec["verify_failed"] = True
        if rc != 0:
            raise CellFailed(_fio_failure(cdir, rc))
        m = fioresult.metrics(fioresult.load(os.path.join(cdir, "fio.json")))
        if m.get("error"):
            raise CellFailed(f"fio reported error {m['error']}: {_fio_failure(cdir, rc)}")
        if not m["ios"]:
            raise CellFailed("fio completed no I/O")
        rec["fio"] = {"file": "fio.json", "version": m["version"], "ios": m["ios"],
                      "runtime_ms": m["runtime_ms"], "end_s": m["end_s"],
                      "combined_from": m["combined_from"],
                      "usr_cpu_pct": m["fio_usr_cpu_pct"], "sys_cpu_pct": m["fio_sys_cpu_pct"],
                      "ctx": m["fio_ctx"]}
        metrics = {k: m[k] for k in results.FIO_METRICS}
        # What the device costs to have: set-up time, the daemon's fds, and kernel memory
        # (KiB) once it was ready and once fio had used it.
        kmem_of = rec["device"]["kernel_memory"]
        metrics["setup_s"] = setup_s
        metrics["daemon_fds"] = rec["device"]["fds"] if device.has_stats else None
        metrics["kernel_mem_setup_kib"] = (kmem_of["setup"] or {}).get("kernel_kib")
        metrics["kernel_slab_setup_kib"] = (kmem_of["setup"] or {}).get("slab_kib")
        metrics["kernel_mem_loaded_kib"] = (kmem_of.get("loaded") or {}).get("kernel_kib")
        # CPU: the samples inside fio's measured window, else the whole fio process.
        alive = [s for s in samples if s.get("fio") is not None]
        win = cpuacct.window(alive, m["end_s"], m["runtime_ms"] / 1000.0)
        how = "fio's measured window"
        if win is None and len(alive) >= 2:
            win, how = (alive[0], alive[-1]), "fio's whole run (start-up and ramp included)"
            rec["warnings"].append("CPU sampled over fio's whole run: its measured window "
                                   "held fewer than 2 samples")
        cpu = cpuacct.per_io(win[0], win[1], m["iops"], os.cpu_count()) if win else None
        if cpu:
            metrics.update({k: v for k, v in cpu.items() if k != "window_s"})
            if cpu.get("cpu_us_per_io") is not None:   # CPU per byte moved, for bandwidth
                metrics["cpu_us_per_mib"] = cpu["cpu_us_per_io"] * (1 << 20) / workload.bs_bytes
        else:
            rec["warnings"].append("no CPU numbers: too few samples")
        rec["cpu"] = {"window": how, "window_s": cpu["window_s"] if cpu else None,
                      "window_start_s": win[0]["t"] if win else None,
                      "window_end_s": win[1]["t"] if win else None,
                      "samples": len(samples), "interval_s": settings["sample_interval_s"],
                      "clk_tck": cpuacct.CLK_TCK, "ncpu": os.cpu_count(),
                      "pids": {"fio": fio_pid, "daemon": device.pid,
                               "server": store.server_pid if store else None,
                               "harness": os.getpid()},
                      "trace": [cpuacct.compact(s, roles) for s in samples]}
        copies = kernelcopies.delta(copies_before, copies_after)
        rec["kernel_copies"] = copies
        if before is not None and after is not None:
            d = daemonstats.delta(before, after)
            metrics.update(daemonstats.per_io(d, workload.bs_bytes))
            metrics.update(kernelcopies.per_io(copies, d.get("bytes.total"), workload.bs_bytes))
            rec["daemon"] = {"pid": device.pid, "stats_delta": d}
        else:
            metrics["user_bytes_per_io"] = None
            metrics.update(kernelcopies.per_io(None, None, None))
            rec["daemon"] = {"pid": device.pid, "stats_delta": None}
        rec["metrics"] = metrics
        status = device.stop(os.path.join(cdir, "stats-final.json"))
        rec["daemon"]["exit_status"] = status
        if status != 0:
            raise CellFailed(f"the daemon exited with status {status} after SIGTERM: "
                             f"{device._stderr_tail()}")
        rec["status"] = "ok"
    except CellSkipped as e:
        rec["status"], rec["reason"] = "skipped", str(e)
    except CellFailed as e:
        rec["status"], rec["reason"] = "failed", str(e)
    except Exception as e:  # a harness bug must not stop the run: record it
        rec["status"] = "failed"
        rec["reason"] = f"harness error: {type(e).__name__}: {e}"
        rec["traceback"] = traceback.format_exc()
    finally:
        if device is not None:
            if rec["status"] != "ok":
                try:
                    device.stop(os.path.join(cdir, "stats-final.json"))
                except (CellFailed, OSError):
                    device.kill()
                device.remove_leftover()
                if rec.get("daemon") is not None and device.proc is not None:
                    rec["daemon"]["exit_status"] = device.proc.returncode
        if store is not None:     # after the daemon, which may still be talking to it
            store.close()
        shutil.rmtree(workdir, ignore_errors=True)
    lines = klog.new_lines()
    bad = dmesg.bad_lines("\n".join(lines))
    rec["kernel_log"] = lines[-200:]
    if bad and rec["status"] == "ok":
        rec["status"] = "failed"
        rec["reason"] = "the kernel log shows a problem: " + " | ".join(bad[:3])
    rec["ended"] = iso()
    rec["ended_epoch"] = time.time()
    rec["seconds"] = time.monotonic() - t0
    results.write_json(os.path.join(cdir, "cell.json"), rec)
    return rec


# --- the run -------------------------------------------------------------------------------

def guest_facts():
    def cmd(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return None
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "platform": os.environ.get("USERBLK_PLATFORM"),
        "kernel": os.uname().release,
        "cmdline": _read_sys("/proc/cmdline"),
        "clocksource": _read_sys("/sys/devices/system/clocksource/clocksource0/"
                                 "current_clocksource"),
        "cpu_model": model,
        "ncpu": os.cpu_count(),
        "clk_tck": cpuacct.CLK_TCK,
        "fio_version": cmd(["fio", "--version"]),
        "python": sys.version.split()[0],
        "time": iso(),
    }


def load_module():
    """insmod userblk.ko from USERBLK_KMOD_DIR unless it is loaded; -> (loaded by us, error
    message or None). The one loader of userblk.ko in Python: the runner's, the kernel suite's,
    the fuzzers' and the fault matrix's (kernel modules the daemon needs, ublk_drv, nbd and the
    references' drivers, it loads itself: core/module.h)."""
    if os.path.exists(CONTROL):
        return False, None
    ko = os.path.join(os.environ.get("USERBLK_KMOD_DIR", ""), "userblk.ko")
    if not os.path.isfile(ko):
        return False, (f"userblk.ko not found in USERBLK_KMOD_DIR="
                       f"{os.environ.get('USERBLK_KMOD_DIR', '')}: run make build")
    try:
        r = subprocess.run(["insmod", ko], capture_output=True, text=True)
    except OSError as e:
        return False, f"cannot run insmod ({e}): install the Debian package kmod (make deps)"
    if r.returncode != 0:
        return False, f"insmod {ko} failed: {r.stderr.strip()}"
    deadline = time.monotonic() + 10
    while not os.path.exists(CONTROL) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True, None


def main(run_dir):
    run_dir = os.path.abspath(run_dir)
    plan = results.read_json(os.path.join(run_dir, "plan.json"))
    if plan is None:
        print(f"run-cells: {run_dir}/plan.json is missing or unreadable", file=sys.stderr)
        return 2
    results.write_json(os.path.join(run_dir, "guest.json"), guest_facts())
    if shutil.which("fio") is None:
        print("run-cells: fio not found: install it (Debian package fio; make deps)",
              file=sys.stderr)
        return 2
    loaded, err = load_module()
    plan["_module_error"] = err
    if err:
        log(f"userblk.ko: {err}; userblk cells will fail, reference cells still run")
    klog = KernelLog()
    total = len(plan["cells"])
    todo = [c for c in plan["cells"]
            if not os.path.exists(os.path.join(run_dir, c["dir"], "cell.json"))]
    started = plan.get("started_epoch", time.time())
    t_boot = time.monotonic()
    done_here = 0
    current = os.path.join(run_dir, "current.json")
    for cell in todo:
        results.write_json(current, {"index": cell["index"], "dir": cell["dir"],
                                     "started": iso()})
        rec = run_cell(cell, plan, run_dir, klog)
        os.unlink(current)
        done_here += 1
        left = len(todo) - done_here
        per_cell = (time.monotonic() - t_boot) / done_here
        m = rec.get("metrics") or {}
        if rec["status"] == "ok":
            what = (f"{si(m.get('iops'))} IOPS, {m['bw_mibps']:.0f} MiB/s, "
                    f"lat {m['lat_mean_us']:.1f} us"
                    + (f", CPU {m['cpu_us_per_io']:.1f} us/IO"
                       if m.get("cpu_us_per_io") is not None else ""))
        else:
            what = f"{rec['status'].upper()}: {rec['reason']}"
        dev = f"{cell['transport']}/{cell['backend']}"
        log(f"[{cell['index']:>{len(str(total))}}/{total}] {dev} {cell['workload']} "
            f"rep {cell['rep']}: {what} | elapsed {fmt_duration(time.time() - started)}, "
            f"ETA {fmt_duration(left * per_cell)}")
    if loaded:
        r = subprocess.run(["rmmod", "userblk"], capture_output=True, text=True)  # after insmod
        if r.returncode != 0:
            log(f"rmmod userblk failed: {r.stderr.strip()}")
    return 0
