"""The host side of `make bench`: plan the cells, boot the platform once, collect, report.

The plan is every (repetition, workload, device) with device = transport x backend, plus
the kernel-only references null_blk and brd (backend "-"); a reference that serves its own
backends (nbdkit: null, ram) runs on the wanted ones among them. It is written to
results/runs/<run-id>/plan.json; the guest-side runner (runner.py) runs the cells of the
plan that have no record yet, so an interrupted run resumes where it stopped.
"""

import hashlib
import os
import platform as pyplatform
import shutil
import signal
import subprocess
import sys
import time

from . import fioresult, hostload, native, report, results, stores, vm, workloads
from .kernel import KernelError
from .say import logger

TOP = results.TOP
PY = "/usr/bin/python3"
ENTRY = os.path.join(TOP, "harness", "harness")
REFERENCES = ("null_blk", "brd")
DEFAULT_BACKENDS = ("null", "ram")     # when the CLI cannot list its backends
CELL_OVERHEAD_S = 3.0                  # fio start-up, device set-up and teardown under TCG
VERIFY_CELL_S = 20.0
VERIFY_DEVICE_CELL_S = 40.0            # a verify over the whole device (write-1m-seq-verify)
PRECONDITION_S = 2.0                   # writing a 256 MiB device once, with fio's start-up
MAX_BOOTS = 4                          # a VM that dies is booted again this often, at most

# Tools the host needs, and the Debian package that has each.
TOOLS = {"fio": "fio", "git": "git"}
VM_TOOLS = {vm.QEMU: "qemu-system-x86"}


class BenchError(Exception):
    """A problem the user can act on; the message says what to do."""


say = logger("bench")


# --- the CLI -------------------------------------------------------------------------------

def cli_path(build):
    return os.path.join(build if os.path.isabs(build) else os.path.join(TOP, build), "userblk")


def _cli(cli, *args):
    try:
        r = subprocess.run([cli, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"{cli} {' '.join(args)} failed: {e}: rebuild it with 'make build'")
    return r


def list_names(cli, flag):
    r = _cli(cli, flag)
    if r.returncode != 0:
        return None
    return [ln.split()[0] for ln in r.stdout.splitlines() if ln.strip()]


def describe(cli, what, name):
    r = _cli(cli, f"--dump-{what}", name)
    if r.returncode != 0:
        return {}
    out = {}
    for ln in r.stdout.splitlines():
        k, eq, v = ln.partition("=")
        if eq:
            out[k.strip()] = v.strip()
    return out


def transport_kind(name, desc):
    if desc.get("kind"):
        return desc["kind"]
    return "reference" if name in REFERENCES + ("loop",) else "userblk"


def stores_data(transport, kind, backend, tdesc, bdesc):
    """Whether data written to the device can be read back (verify workloads need it)."""
    for key in ("data", "storage"):        # the transport's self-description decides first
        if tdesc.get(key):
            return not tdesc[key].startswith("none")
    if kind == "reference" and backend == results.NO_BACKEND:
        return transport != "null_blk"
    return not bdesc.get("storage", "").startswith("none")   # nbdkit's null plugin: none


def device_backends(name, kind, tdesc, want_b, explicit):
    """The backends a device runs on, by its entry's backend_use= (--dump-transport): every
    wanted one for a transport served through a Backend object ("object"); none ("-", the
    kernel serves it) for a kernel-only reference ("none"); for one that serves backends by
    name itself ("own", e.g. nbdkit: backends=null,ram), the wanted ones among them. One asked
    for by name that serves none of the wanted backends is an error."""
    use = tdesc.get("backend_use", "object")
    if use == "object":
        return list(want_b)
    if use == "none":
        return [results.NO_BACKEND]
    own = split_list(tdesc.get("backends", ""))
    served = [b for b in want_b if b in own]
    if not served and explicit:
        raise BenchError(f"{name} serves only the backends {', '.join(own)}, not "
                         f"{', '.join(want_b)}: add BACKEND={own[0]}")
    return served


def deletable(kind, tdesc):
    """Whether `userblk del --transport T ID` removes a device a killed daemon left behind:
    every daemon-served transport, and a reference whose delete= says so (nbdkit); the
    kernel-only references go with their `userblk add`."""
    return kind != "reference" or "userblk del" in tdesc.get("delete", "")


# --- facts for meta.json -------------------------------------------------------------------

def _run(argv, cwd=TOP):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=60)
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def git_facts():
    commit = _run(["git", "rev-parse", "HEAD"])
    try:
        r = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                           cwd=TOP, timeout=60)
        status = r.stdout if r.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        status = None
    dirty = None if status is None else bool(status)
    return {"commit": commit, "describe": _run(["git", "describe", "--always", "--dirty"]),
            "dirty": dirty,
            "dirty_paths": [ln[3:] for ln in (status or "").splitlines()][:100]}


def sha256(path):
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def iso(t=None):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t if t is not None else time.time()))


# --- planning ------------------------------------------------------------------------------

def parse_variant(entry):
    """A TRANSPORT entry "ring:poll-us=50" -> ("ring", ["--poll-us", "50"]).

    A variant measures one transport with `userblk add` options of its own; the whole entry
    stays its name in the results, so "ring" and "ring:poll-us=50" are separate rows.
    """
    base, *opts = entry.split(":")
    args = []
    for o in opts:
        key, eq, value = o.partition("=")
        if not eq or not key or not value:
            raise BenchError(f"transport variant {entry!r}: options are NAME:OPTION=VALUE, "
                             "e.g. ring:poll-us=50")
        args += [f"--{key}", value]
    return base, args


def split_list(text):
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def pick_platform(choice):
    if choice in ("vm", "native"):
        if choice == "native":
            reasons = native.why_not()
            if reasons:
                raise BenchError("native platform unavailable: " + "; ".join(reasons)
                                 + " (use PLATFORM=vm)")
        return choice, "chosen with PLATFORM/--platform"
    reasons = native.why_not()
    if not reasons:
        return "native", "this host loads modules and has the headers"
    return "vm", "; ".join(reasons)


def make_plan(a, cli):
    transports = list_names(cli, "--list-transports")
    if transports is None:
        raise BenchError(f"{cli} --list-transports failed: rebuild it with 'make build'")
    backends = list_names(cli, "--list-backends") or list(DEFAULT_BACKENDS)
    refs = [r for r in REFERENCES]
    valid = transports + [r for r in refs if r not in transports]
    wanted = split_list(a.transport)
    if not wanted:
        raise BenchError("say which transport to measure: make bench TRANSPORT=<name> "
                         f"(valid: {', '.join(valid)}, or all)")
    if wanted == ["all"]:
        wanted = list(transports)
    for t in wanted:
        if parse_variant(t)[0] not in valid:
            raise BenchError(f"unknown transport {t!r}; valid transports: "
                             f"{', '.join(valid)} (or all)")
    want_b = split_list(a.backend) or list(DEFAULT_BACKENDS)
    if want_b == ["all"]:
        want_b = list(backends)
    for b in want_b:
        try:
            base_b, _ = stores.split_backend(b)
        except stores.StoreError as e:
            raise BenchError(str(e))
        if base_b not in backends:
            raise BenchError(f"unknown backend {b!r}; valid backends: {', '.join(backends)} "
                             "(variants: file:direct=1, null:fill=none)")
    try:
        wl, runtime, ramp, set_name = workloads.resolve(a.workloads)
    except workloads.WorkloadError as e:
        raise BenchError(str(e))
    if a.runtime is not None:
        runtime = a.runtime
    if a.ramp is not None:
        ramp = a.ramp
    if a.reps < 1:
        raise BenchError("REPS must be at least 1")

    bdesc = {b: describe(cli, "backend", stores.split_backend(b)[0]) for b in want_b}
    for b in want_b:
        base_b, options = stores.split_backend(b)
        # A CLI that does not list a backend's options leaves them to the daemon.
        takes = split_list(bdesc[b]["options"]) if "options" in bdesc[b] else None
        unknown = [k for k in options if takes is not None and k not in takes]
        if unknown:
            raise BenchError(f"backend variant {b!r}: {base_b} takes "
                             f"{'the options ' + ', '.join(takes) if takes else 'no options'}, "
                             f"not {', '.join(unknown)}")
    devices = []
    for t in [t for t in wanted if t not in refs] + refs:
        base, options = parse_variant(t)
        tdesc = describe(cli, "transport", base)
        kind = transport_kind(base, tdesc)
        role = "measured" if t in wanted else "reference"
        served = device_backends(t, kind, tdesc, want_b, explicit=t in split_list(a.transport))
        for b in served:
            devices.append({"transport": t, "base": base, "options": options, "backend": b,
                            "kind": kind, "role": role,
                            "stores_data": stores_data(base, kind, b, tdesc, bdesc.get(b, {})),
                            "deletable": deletable(kind, tdesc)})

    cells = []
    for rep in range(1, a.reps + 1):
        for w in wl:
            for d in devices:
                cells.append({"index": len(cells) + 1, "transport": d["transport"],
                              "backend": d["backend"], "workload": w.name, "rep": rep})
    return {
        "schema": results.PLAN_SCHEMA,
        "settings": {"size": a.size, "size_bytes": parse_size(a.size), "queues": a.queues,
                     "depth": a.depth, "nofile": a.nofile, "runtime_s": runtime,
                     "ramp_s": ramp, "reps": a.reps,
                     "workload_set": set_name, "sample_interval_s": a.sample_interval,
                     "precondition": not a.no_precondition,
                     "cli": cli, "build": a.build},
        "devices": devices,
        "workloads": [{"name": w.name, "rw": w.rw, "mix_read_pct": w.mix_read or None,
                       "bs_bytes": w.bs_bytes, "iodepth": w.iodepth, "jobs": w.jobs,
                       "size": w.size,
                       "job_file": os.path.relpath(w.job()[0], TOP), "section": w.job()[1]}
                      for w in wl],
        "cells": cells,
    }


def parse_size(text):
    t = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if t and t[-1] in mult:
            return int(t[:-1]) * mult[t[-1]]
        return int(t)
    except ValueError:
        raise BenchError(f"bad size {text!r}: a number with an optional K, M, G or T suffix")


def estimate_s(plan, cells):
    s = plan["settings"]
    total = 0.0
    kinds = {w["name"]: w["rw"] for w in plan["workloads"]}
    whole = {w["name"] for w in plan["workloads"] if w.get("size") == "device"}
    keeps = {(d["transport"], d["backend"]): d.get("stores_data") for d in plan["devices"]}
    for c in cells:
        if kinds[c["workload"]] == "verify":
            total += VERIFY_DEVICE_CELL_S if c["workload"] in whole else VERIFY_CELL_S
        else:
            total += s["runtime_s"] + s["ramp_s"] + CELL_OVERHEAD_S
        if s.get("precondition") and keeps.get((c["transport"], c["backend"])):
            total += PRECONDITION_S
    return total


def new_run_id(transports):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = "+".join(transports)[:40] if len(transports) <= 3 else "all"
    base = f"{stamp}-{name}"
    run_id, n = base, 1
    while os.path.exists(os.path.join(results.RUNS_DIR, run_id)):
        n += 1
        run_id = f"{base}-{n}"
    return run_id


# --- running -------------------------------------------------------------------------------

def check_tools(platform):
    need = dict(TOOLS)
    if platform == "vm":
        need.update(VM_TOOLS)
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in need.items()
               if shutil.which(tool) is None]
    if missing:
        raise BenchError("missing tools: " + ", ".join(missing) + ": install them with 'make deps'")


def remaining(run_dir, plan):
    return [c for c in plan["cells"]
            if not os.path.exists(os.path.join(run_dir, c["dir"], "cell.json"))]


def fail_interrupted_cell(run_dir, plan, reason):
    """The VM died during a cell: record that cell as failed so the next boot moves on."""
    cur = results.read_json(os.path.join(run_dir, "current.json"))
    if not cur:
        return None
    cell = next((c for c in plan["cells"] if c["index"] == cur["index"]), None)
    try:
        os.unlink(os.path.join(run_dir, "current.json"))
    except OSError:
        pass
    if cell is None:
        return None
    cdir = os.path.join(run_dir, cell["dir"])
    results.write_json(os.path.join(cdir, "cell.json"), {
        "schema": results.CELL_SCHEMA, "index": cell["index"], "transport": cell["transport"],
        "backend": cell["backend"], "workload": cell["workload"], "rep": cell["rep"],
        "status": "failed", "reason": reason, "started": cur.get("started"), "ended": iso(),
        "metrics": {}, "warnings": []})
    return cell


def keep_boot_files(run_dir, n):
    """Move the vm layer's per-boot files into boots/<n>/ so a later boot cannot overwrite them."""
    dest = os.path.join(run_dir, "boots", str(n))
    os.makedirs(dest, exist_ok=True)
    for name in ("vm.json", "console.log", "guest-info", "cmd.sh", "status", "guest.json"):
        src = os.path.join(run_dir, name)
        if os.path.exists(src):
            shutil.move(src, os.path.join(dest, name))
    return dest


def run_boots(run_dir, plan, a, platform):
    boots = []
    guest_argv = [PY, ENTRY, "run-cells", run_dir]
    first = len(results.read_json(os.path.join(run_dir, "meta.json"), {}).get("boots", [])) + 1
    for n in range(first, first + MAX_BOOTS):
        todo = remaining(run_dir, plan)
        if not todo:
            break
        est = estimate_s(plan, todo)
        t0 = time.time()
        if platform == "vm":
            timeout = int(est * 2 + 300)
            say(f"booting the VM ({len(todo)} cells, about {fmt_min(est)}; watchdog {timeout} s)")
            opts = vm.VmOptions(smp=a.smp, mem_mb=a.mem, accel=a.accel, timeout=timeout,
                                tsc_reliable=not a.no_tsc_reliable,
                                idle_poll=not a.no_idle_poll, append=a.append, out=run_dir)
            monitor = hostload.HostMonitor().start()
            try:
                res = vm.run(guest_argv, opts)
            except (KernelError, RuntimeError) as e:
                raise BenchError(f"vm: {e}")
            finally:
                host_samples = monitor.stop()
            status, problems = res.status, res.problems
            info = res.info
        else:
            status = native.run(guest_argv)
            problems, info = [], {"platform": "native"}
            host_samples = None
        dest = keep_boot_files(run_dir, n)
        if host_samples is not None:
            results.write_json(os.path.join(dest, "host-load.json"), {
                "what": "CPU the host gave to other processes and lost to steal while the VM "
                        "ran: [time (s since the epoch), other processes (CPUs), steal (CPUs), "
                        "qemu (CPUs)] per interval",
                "interval_s": 1.0, "ncpu": os.cpu_count(), "samples": host_samples})
        boot = {"n": n, "status": status, "started": iso(t0), "ended": iso(),
                "seconds": round(time.time() - t0, 3), "dir": os.path.relpath(dest, run_dir),
                "kernel_problems": problems[:20], "cells_before": len(todo),
                "cells_after": len(remaining(run_dir, plan))}
        if platform == "vm":
            boot.update(accel=info.get("accel"), accel_reason=info.get("accel_reason"),
                        qemu=info.get("qemu"), kernel=info.get("kernel"),
                        guest_options=info.get("guest_options"))
        boots.append(boot)
        if status != 0:
            why = {vm.EXIT_WATCHDOG: "the VM ran past its watchdog and was killed",
                   vm.EXIT_NO_STATUS: "the VM stopped without reporting a status",
                   vm.EXIT_KERNEL_PROBLEM: "the kernel log shows a problem"}.get(
                       status, f"the runner exited with status {status}")
            if problems:
                why += ": " + " | ".join(problems[:3])
            cell = fail_interrupted_cell(
                run_dir, plan, f"{why} (during this cell; see {boot['dir']}/console.log)")
            if cell:
                say(f"cell {cell['index']} failed: {why}")
            elif boot["cells_after"] == boot["cells_before"] and boot["cells_after"]:
                say(f"{why}; no cell ran, so not booting again")
                break
            if boot["cells_after"]:
                say(f"{why}; booting again for the {boot['cells_after']} cells left")
        if platform == "native":
            break
    return boots


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_children():
    """Stop the VM (or the native runner) after an interrupt: they must not go on writing."""
    for pid in hostload._children_named(os.getpid(), ""):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def tidy_interrupted(run_dir, meta):
    """A run stopped mid-boot leaves the vm layer's files and the runner's current.json in
    the run directory: keep the former as an interrupted boot, drop the latter (that cell
    runs again on resume)."""
    for name in ("current.json", "initramfs.cpio"):
        try:
            os.unlink(os.path.join(run_dir, name))
        except OSError:
            pass
    if any(os.path.exists(os.path.join(run_dir, n)) for n in ("console.log", "cmd.sh")):
        n = len(meta.get("boots") or []) + 1
        dest = keep_boot_files(run_dir, n)
        meta.setdefault("boots", []).append({"n": n, "status": None, "interrupted": True,
                                             "dir": os.path.relpath(dest, run_dir)})
        results.write_json(os.path.join(run_dir, "meta.json"), meta)


def fmt_min(s):
    s = int(round(s))
    return f"{s // 60} min {s % 60:02d} s"


# --- finishing -----------------------------------------------------------------------------

def platform_facts(run_dir, meta):
    """Platform facts for meta.json, from the first boot's vm.json and guest.json."""
    boots = meta.get("boots") or []
    facts = {"name": meta.get("platform", {}).get("name"),
             "reason": meta.get("platform", {}).get("reason")}
    if boots:
        d = os.path.join(run_dir, boots[0]["dir"])
        vmj = results.read_json(os.path.join(d, "vm.json"), {})
        guest = results.read_json(os.path.join(d, "guest.json"), {})
        facts.update({
            "accel": vmj.get("accel") if vmj else None,
            "accel_reason": vmj.get("accel_reason") if vmj else None,
            "qemu": vmj.get("qemu") if vmj else None,
            "smp": vmj.get("smp") if vmj else guest.get("ncpu"),
            "mem_mb": vmj.get("mem_mb") if vmj else None,
            "guest_options": vmj.get("guest_options") if vmj else None,
            "kernel": guest.get("kernel"),
            "cmdline": guest.get("cmdline"),
            "clocksource": guest.get("clocksource"),
            "cpu_model": guest.get("cpu_model"),
            "ncpu": guest.get("ncpu"),
            "fio_version": guest.get("fio_version"),
        })
        if facts["name"] == "native":
            facts["accel"] = "none"
    return facts


def finish(run_dir, quiet=False, figure=True):
    """(Re)write summary.json, summary.csv, table.txt and figure.png of a run; print the table."""
    plan = results.read_json(os.path.join(run_dir, "plan.json"))
    if plan is None:
        raise BenchError(f"{run_dir} has no plan.json: not a run directory")
    meta = results.read_json(os.path.join(run_dir, "meta.json"), {})
    cells = results.load_cells(run_dir, plan)
    reread_fio(run_dir, plan, cells)
    attach_host_load(run_dir, meta, cells)
    pf = meta.get("platform", {})
    rows = results.write_summary(run_dir, plan, cells, pf.get("name"), pf.get("accel"),
                                 extra={"fio_version": meta.get("tools", {}).get("fio_version")})
    summary = results.read_json(os.path.join(run_dir, "summary.json"))
    text = report.table(rows, meta, summary)
    results.write_atomic(os.path.join(run_dir, "table.txt"), text)
    if not quiet:
        print(text, end="", flush=True)
    if figure:
        stamp = (f"userblk {summary['run_id']}  |  {pf.get('name')}/{pf.get('accel')}, "
                 f"kernel {pf.get('kernel')}  |  {meta.get('tools', {}).get('fio_version')}  |  "
                 f"{plan['settings']['reps']} reps, medians")
        try:
            report.figure(rows, os.path.join(run_dir, "figure.png"), stamp)
        except ImportError:
            say("no figure: matplotlib is missing (Debian package python3-matplotlib; make deps)")
    return summary


def reread_fio(run_dir, plan, cells):
    """Take the fio numbers of measured cells from their raw fio.json again (in memory), so a
    summary always follows the raw results and the current parser."""
    for spec, c in zip(plan["cells"], cells):
        if c.get("status") != "ok":
            continue
        try:
            m = fioresult.metrics(fioresult.load(os.path.join(run_dir, spec["dir"], "fio.json")))
        except (OSError, fioresult.FioResultError):
            continue
        c["metrics"].update({k: m[k] for k in results.FIO_METRICS})


def attach_host_load(run_dir, meta, cells):
    """Add the host's load during each cell (hostload.py) to the cell's metrics, in memory."""
    samples = []
    for boot in meta.get("boots") or []:
        doc = results.read_json(os.path.join(run_dir, boot["dir"], "host-load.json"), {})
        samples += doc.get("samples") or []
    if not samples:
        return
    for c in cells:
        if c.get("status") == "ok" and c.get("started_epoch") and c.get("ended_epoch"):
            other, steal = hostload.mean_over(samples, c["started_epoch"], c["ended_epoch"])
            c["metrics"]["host_other_cores"] = other
            c["metrics"]["host_steal_cores"] = steal


def rel(path):
    p = os.path.relpath(path, os.getcwd())
    return path if p.startswith("..") else p


def add_args(ap):
    ap.add_argument("--transport", default=os.environ.get("TRANSPORT", ""),
                    help="transport(s) to measure: a name, a comma list, or all "
                         "(null_blk and brd are always added)")
    ap.add_argument("--backend", default=os.environ.get("BACKEND") or "null,ram",
                    help="backend(s): a name or a comma list (default null,ram); the "
                         "harness makes what file and forward need (a backing file on the "
                         "guest's tmpfs, an nbdkit memory server on 127.0.0.1) for each cell")
    ap.add_argument("--workloads", default=os.environ.get("WORKLOADS") or "quick",
                    help="a set (quick, paper, forward) or a comma list of workload names "
                         "(default quick)")
    ap.add_argument("--reps", type=int, default=int(os.environ.get("REPS") or 3),
                    help="repetitions of each cell (default 3)")
    ap.add_argument("--platform", default=os.environ.get("PLATFORM") or "auto",
                    choices=["auto", "vm", "native"], help="where to run (default auto)")
    ap.add_argument("--resume", metavar="RUN_DIR",
                    help="finish an interrupted run: run the cells it has no record of")
    ap.add_argument("--build", default=os.environ.get("BUILD") or "build",
                    help="the CMake build folder holding the userblk CLI (default build)")
    ap.add_argument("--size", default="256M", help="device size (default 256M)")
    ap.add_argument("--queues", type=int, default=None,
                    help="hardware queues per device (default: the platform's CPUs)")
    ap.add_argument("--depth", type=int, default=128, help="queue depth per queue (default 128)")
    ap.add_argument("--runtime", type=float, default=None,
                    help="seconds measured per cell (default: the set's)")
    ap.add_argument("--ramp", type=float, default=None,
                    help="seconds of ramp before measuring (default: the set's)")
    ap.add_argument("--sample-interval", type=float, default=0.5,
                    help="seconds between CPU samples (default 0.5)")
    ap.add_argument("--no-precondition", action="store_true",
                    help="do not write devices that store data once before each cell "
                         "(workloads/precondition.fio)")
    ap.add_argument("--nofile", type=int, default=None,
                    help="the daemon's open-files limit, soft and hard (default: inherited; "
                         "a pipe per tag needs 2 fds a tag, beyond the guest's 4096)")
    ap.add_argument("--smp", type=int, default=2, help="VM CPUs (default 2)")
    ap.add_argument("--mem", type=int, default=2048, help="VM memory in MiB (default 2048)")
    ap.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto",
                    help="VM accelerator (default auto)")
    ap.add_argument("--no-tsc-reliable", action="store_true",
                    help="boot the VM without tsc=reliable (see docs/platform.md)")
    ap.add_argument("--no-idle-poll", action="store_true", help="boot without idle=poll")
    ap.add_argument("--append", default="", help="more guest kernel options")
    ap.add_argument("--no-figure", action="store_true", help="skip figure.png")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 if any cell failed (default: exit 0 once the run is written, "
                         "unless a device returned wrong data in a verify cell)")


def main(a, argv):
    t_start = time.time()
    if a.resume:
        run_dir = os.path.abspath(a.resume)
        plan = results.read_json(os.path.join(run_dir, "plan.json"))
        if plan is None:
            raise BenchError(f"{a.resume} has no plan.json: give a run directory "
                             "(results/runs/<run-id>)")
        meta = results.read_json(os.path.join(run_dir, "meta.json"), {})
        platform = meta.get("platform", {}).get("name") or pick_platform(a.platform)[0]
        check_tools(platform)
        tidy_interrupted(run_dir, meta)
        meta.setdefault("commands", {}).setdefault("resumed", []).append(
            {"argv": argv, "time": iso()})
        say(f"resuming {rel(run_dir)}: {len(remaining(run_dir, plan))} of "
            f"{len(plan['cells'])} cells left")
    else:
        cli = cli_path(a.build)
        if not os.access(cli, os.X_OK):
            raise BenchError(f"{rel(cli)} not found: build it first with 'make build' "
                             "(make bench does)")
        platform, why = pick_platform(a.platform)
        check_tools(platform)
        if a.queues is None:
            a.queues = a.smp if platform == "vm" else os.cpu_count()
        plan = make_plan(a, cli)
        run_id = new_run_id([t for t in split_list(a.transport)])
        run_dir = os.path.join(results.RUNS_DIR, run_id)
        os.makedirs(run_dir)
        plan["run_id"] = run_id
        plan["platform"] = platform
        plan["started_epoch"] = t_start
        for c in plan["cells"]:
            c["dir"] = os.path.relpath(results.cell_dir(run_dir, c["transport"], c["backend"],
                                                        c["workload"], c["rep"]), run_dir)
        results.write_json(os.path.join(run_dir, "plan.json"), plan)
        ko = os.path.join(TOP, "kmod", "userblk.ko")
        meta = {
            "schema": results.META_SCHEMA, "run_id": run_id, "started": iso(t_start),
            "ended": None,
            "git": git_facts(),
            "host": {"kernel": os.uname().release, "cpu_model": cpu_model(),
                     "ncpu": os.cpu_count(), "python": pyplatform.python_version()},
            "platform": {"name": platform, "reason": why},
            "tools": {"fio_version": _run(["fio", "--version"]),
                      "qemu_version": vm.qemu_version() if platform == "vm" else None,
                      "userblk_cli": {"path": os.path.relpath(cli, TOP), "sha256": sha256(cli)},
                      "userblk_ko": {"path": os.path.relpath(ko, TOP), "sha256": sha256(ko)}},
            "settings": plan["settings"],
            "commands": {"harness": argv, "cwd": os.getcwd(),
                         "make_vars": {k: os.environ[k] for k in
                                       ("TRANSPORT", "BACKEND", "WORKLOADS", "REPS", "PLATFORM")
                                       if k in os.environ},
                         "guest": [PY, os.path.relpath(ENTRY, TOP), "run-cells", run_dir],
                         "device": "per cell: cells/.../cell.json commands.device",
                         "fio": "per cell: cells/.../cell.json commands.fio and fio_env"},
            "boots": [],
        }
        results.write_json(os.path.join(run_dir, "meta.json"), meta)
        devs = ", ".join(d["transport"] + ("" if d["backend"] == results.NO_BACKEND
                                          else "/" + d["backend"]) for d in plan["devices"])
        say(f"run {rel(run_dir)}: {len(plan['cells'])} cells = {len(plan['devices'])} devices "
            f"({devs}) x {len(plan['workloads'])} workloads x {a.reps} reps; "
            f"platform {platform} ({why}); "
            f"about {fmt_min(estimate_s(plan, plan['cells']))}")

    interrupted = False
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        boots = run_boots(run_dir, plan, a, platform)
    except KeyboardInterrupt:
        interrupted = True
        boots = []
        stop_children()
        say("interrupted")
    finally:
        signal.signal(signal.SIGTERM, old_term)
    if interrupted:
        tidy_interrupted(run_dir, results.read_json(os.path.join(run_dir, "meta.json"), meta))
    meta = results.read_json(os.path.join(run_dir, "meta.json"), meta)
    meta["boots"] = (meta.get("boots") or []) + boots
    meta["ended"] = iso()
    meta["platform"] = platform_facts(run_dir, meta)
    meta["tools"]["fio_version"] = meta["tools"].get("fio_version") or \
        meta["platform"].get("fio_version")
    results.write_json(os.path.join(run_dir, "meta.json"), meta)
    summary = finish(run_dir, figure=not a.no_figure)
    left = len(remaining(run_dir, plan))
    c = summary["cells"]
    if c.get("failed"):
        say(f"{c['failed']} of {c['planned']} cells failed: their reasons are in the table "
            "and in summary.csv")
    corrupt = verify_failures(run_dir, plan)
    for cell in corrupt:
        say(f"DATA VERIFICATION FAILED: {cell['transport']}/{cell['backend']} "
            f"{cell['workload']} rep {cell['rep']} returned other data than was written "
            f"({os.path.join(rel(run_dir), cell['dir'], 'fio.log')})")
    if left:
        say(f"{left} cells not run: resume with  harness/bench --resume {rel(run_dir)}")
    print(f"run: {rel(run_dir)}", flush=True)
    if interrupted:
        return 130
    if left or (a.strict and c.get("failed")) or (c["ok"] == 0 and c["planned"]) or corrupt:
        return 1
    return 0


def verify_failures(run_dir, plan):
    """The cells whose device returned wrong data (fio's verification failed)."""
    out = []
    for c in plan["cells"]:
        rec = results.read_json(os.path.join(run_dir, c["dir"], "cell.json"), {})
        if rec.get("verify_failed"):
            out.append(c)
    return out
