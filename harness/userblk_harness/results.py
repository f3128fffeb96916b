"""The results directory of a run: layout, atomic writes, cell records and the summary.

    results/runs/<run-id>/
      meta.json  plan.json  summary.json  summary.csv  table.txt  figure.png
      cells/<transport>/<backend>/<workload>/rep<N>/{cell.json, fio.json, ...}

docs/results-schema.md describes every file and field.
"""

import csv
import io
import json
import os
import statistics
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNS_DIR = os.path.join(TOP, "results", "runs")

PLAN_SCHEMA = "userblk-bench-plan/1"
CELL_SCHEMA = "userblk-bench-cell/1"
SUMMARY_SCHEMA = "userblk-bench-summary/1"
META_SCHEMA = "userblk-bench-meta/1"

NO_BACKEND = "-"          # the backend of kernel-only reference rows
REFERENCE_FLOOR = "null_blk"

# Per-cell metrics summarised over repetitions (each gets _median, _min, _max columns).
METRICS = (
    "iops",
    "bw_mibps",
    "lat_mean_us",
    "lat_p50_us",
    "lat_p99_us",
    "lat_p999_us",
    "lat_total_mean_us",
    "cpu_us_per_io",
    "cpu_fio_us_per_io",
    "cpu_daemon_us_per_io",
    "cpu_server_us_per_io",
    "cpu_other_us_per_io",
    "cpu_harness_us_per_io",
    "cpu_stat_us_per_io",
    "cpu_stat_coverage",
    "cpu_busy_cores",
    "ctxsw_per_io",
    "cpu_us_per_mib",
    "user_bytes_per_io",
    "kernel_copy_user_bytes_per_io",
    "kernel_copy_kernel_bytes_per_io",
    "kernel_lent_bytes_per_io",
    "adapter_bytes_per_io",
    "daemon_requests_per_io",
    "daemon_syscalls_per_request",
    "adapter_copied_bytes_per_request",
    "setup_s",
    "daemon_fds",
    "kernel_mem_setup_kib",
    "kernel_slab_setup_kib",
    "kernel_mem_loaded_kib",
    "host_other_cores",
    "host_steal_cores",
)

# The metrics that come from fio's JSON alone.
FIO_METRICS = ("iops", "bw_mibps", "lat_mean_us", "lat_p50_us", "lat_p99_us", "lat_p999_us",
               "lat_total_mean_us")

ROW_KEYS = ("transport", "backend", "workload", "reps", "status")
CONTEXT_KEYS = ("kind", "rw", "bs_bytes", "iodepth", "jobs", "runtime_s", "ramp_s",
                "reps_planned", "reps_failed", "reason", "iops_vs_null_blk",
                "max_sectors_kb", "nr_requests", "scheduler", "nr_hw_queues",
                "queues", "depth", "size_bytes", "platform", "accel")


def columns():
    cols = list(ROW_KEYS)
    for m in METRICS:
        cols += [f"{m}_median", f"{m}_min", f"{m}_max"]
    cols += [c for c in CONTEXT_KEYS]
    return cols


# --- writing -------------------------------------------------------------------------------

def write_atomic(path, data):
    """Write text or bytes to path through a temporary file and a rename."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path, obj):
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


# --- layout --------------------------------------------------------------------------------

def backend_dir(backend):
    return "none" if backend == NO_BACKEND else backend


def cell_dir(run_dir, transport, backend, workload, rep):
    return os.path.join(run_dir, "cells", transport, backend_dir(backend), workload, f"rep{rep}")


def load_cells(run_dir, plan):
    """The cell records of a plan, in plan order; a cell not run yet has status 'missing'."""
    out = []
    for c in plan["cells"]:
        rec = read_json(os.path.join(run_dir, c["dir"], "cell.json"))
        if rec is None:
            rec = {"transport": c["transport"], "backend": c["backend"],
                   "workload": c["workload"], "rep": c["rep"], "status": "missing",
                   "reason": "not run (the run was interrupted: resume it)", "metrics": {}}
        out.append(rec)
    return out


# --- summary -------------------------------------------------------------------------------

def spread(values):
    """(median, min, max) of the numbers in values, ignoring None; (None,)*3 if none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def summarize(plan, cells, platform=None, accel=None):
    """One row per (transport, backend, workload), in plan order: medians and spreads."""
    devices = {(d["transport"], d["backend"]): d for d in plan["devices"]}
    settings = plan.get("settings", {})
    groups = {}
    for c in cells:
        groups.setdefault((c["transport"], c["backend"], c["workload"]), []).append(c)

    rows = []
    for w in plan["workloads"]:
        for d in plan["devices"]:
            key = (d["transport"], d["backend"], w["name"])
            reps = groups.get(key, [])
            ok = [c for c in reps if c.get("status") == "ok"]
            failed = [c for c in reps if c.get("status") == "failed"]
            skipped = [c for c in reps if c.get("status") == "skipped"]
            missing = [c for c in reps if c.get("status") == "missing"]
            if reps and len(ok) == len(reps):
                status = "ok"
            elif ok:
                status = "partial"
            elif skipped and len(skipped) == len(reps):
                status = "skipped"
            elif failed:
                status = "failed"
            else:
                status = "missing"
            reason = next((c.get("reason") for c in failed + skipped + missing
                           if c.get("reason")), None)
            row = {"transport": d["transport"], "backend": d["backend"], "workload": w["name"],
                   "reps": len(ok), "status": status}
            for m in METRICS:
                med, lo, hi = spread([c.get("metrics", {}).get(m) for c in ok])
                row[f"{m}_median"], row[f"{m}_min"], row[f"{m}_max"] = med, lo, hi
            first = ok[0] if ok else (reps[0] if reps else {})
            queue = (first.get("device") or {}).get("queue") or {}
            row.update({
                "kind": devices[key[:2]].get("kind"),
                "rw": w["rw"], "bs_bytes": w["bs_bytes"], "iodepth": w["iodepth"],
                "jobs": w["jobs"],
                "runtime_s": None if w["rw"] == "verify" else settings.get("runtime_s"),
                "ramp_s": None if w["rw"] == "verify" else settings.get("ramp_s"),
                "reps_planned": len(reps), "reps_failed": len(failed), "reason": reason,
                "iops_vs_null_blk": None,
                "max_sectors_kb": queue.get("max_sectors_kb"),
                "nr_requests": queue.get("nr_requests"),
                "scheduler": queue.get("scheduler"),
                "nr_hw_queues": queue.get("nr_hw_queues"),
                "queues": geometry(devices[key[:2]], settings, "queues"),
                "depth": geometry(devices[key[:2]], settings, "depth"),
                "size_bytes": settings.get("size_bytes"),
                "platform": platform or plan.get("platform"), "accel": accel,
            })
            rows.append(row)
    floor = {r["workload"]: r["iops_median"] for r in rows
             if r["transport"] == REFERENCE_FLOOR and r["iops_median"]}
    for r in rows:
        if r["iops_median"] is not None and floor.get(r["workload"]):
            r["iops_vs_null_blk"] = r["iops_median"] / floor[r["workload"]]
    return rows


def geometry(device, settings, what):
    """The device's queues or depth: its variant's own (pipe:queues=2:depth=128), else the
    run's."""
    options = device.get("options") or []
    for i, o in enumerate(options[:-1]):
        if o == f"--{what}":
            try:
                return int(options[i + 1])
            except ValueError:
                return options[i + 1]
    return settings.get(what)


def count_status(cells):
    out = {"planned": len(cells), "ok": 0, "failed": 0, "skipped": 0, "missing": 0}
    for c in cells:
        out[c.get("status", "missing")] = out.get(c.get("status", "missing"), 0) + 1
    return out


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def summary_csv(rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = columns()
    w.writerow(cols)
    for r in rows:
        w.writerow([_csv_value(r.get(c)) for c in cols])
    return buf.getvalue()


def read_summary_csv(path):
    """summary.csv -> list of dicts with numbers as floats (ints where whole) and '' as None."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out = {}
            for k, v in r.items():
                if v == "":
                    out[k] = None
                    continue
                try:
                    out[k] = int(v)
                except ValueError:
                    try:
                        out[k] = float(v)
                    except ValueError:
                        out[k] = v
            rows.append(out)
    return rows


def write_summary(run_dir, plan, cells, platform=None, accel=None, extra=None):
    rows = summarize(plan, cells, platform, accel)
    doc = {"schema": SUMMARY_SCHEMA, "run_id": plan.get("run_id"), "platform": platform,
           "accel": accel, "cells": count_status(cells), "columns": columns(), "rows": rows}
    if extra:
        doc.update(extra)
    write_json(os.path.join(run_dir, "summary.json"), doc)
    write_atomic(os.path.join(run_dir, "summary.csv"), summary_csv(rows))
    return rows
