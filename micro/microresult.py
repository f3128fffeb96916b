"""Reading userblk_micro's JSON (Google Benchmark's format): one row per primitive.

A primitive is a benchmark's run name without the "/real_time" suffix, e.g. "memcpy/4096" or
"wakeup/futex". Its cost is nanoseconds per operation: real_time / ops, where the counter ops is
the number of operations one iteration does (1, or 32 for the batched ones) and the counter
bytes the bytes each operation moves (0 when none). With repetitions the median is used and the
spread (min and max of the repetitions) kept. Parameters come from the data, never from file
names. Standard library only.
"""

import json
import os

UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


class MicroError(Exception):
    """A file that is not userblk_micro's output, with a sentence saying why."""


def primitive_name(run_name):
    return run_name[: -len("/real_time")] if run_name.endswith("/real_time") else run_name


def group_of(primitive):
    """The family before the first '/': memcpy, pipe, file, socket, wakeup, uring, codec."""
    return primitive.split("/", 1)[0]


def load(path):
    """{"path", "context", "rows": {primitive: row}} where row has ns_per_op, ns_min, ns_max,
    ops, bytes, repetitions, and error (the skip message, with ns_per_op None)."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise MicroError(f"{path}: cannot read it as JSON ({e})")
    if not isinstance(doc, dict) or "benchmarks" not in doc or "context" not in doc:
        raise MicroError(f"{path}: not Google Benchmark JSON (no 'context' and 'benchmarks')")
    samples = {}
    medians = {}
    errors = {}
    for b in doc["benchmarks"]:
        name = primitive_name(b.get("run_name", b.get("name", "")))
        if b.get("error_occurred"):
            errors[name] = b.get("error_message", "skipped")
            continue
        ops = float(b.get("ops", 1.0)) or 1.0
        ns = float(b["real_time"]) * UNIT_NS.get(b.get("time_unit", "ns"), 1.0) / ops
        meta = {"ops": ops, "bytes": float(b.get("bytes", 0.0))}
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[name] = (ns, meta)
            continue
        samples.setdefault(name, []).append((ns, meta))
    rows = {}
    for name in list(samples) + [n for n in medians if n not in samples]:
        values = [ns for ns, _ in samples.get(name, [])]
        if name in medians:
            ns, meta = medians[name]
        else:
            ns, meta = sorted(samples[name], key=lambda s: s[0])[(len(values) - 1) // 2]
        rows[name] = {"ns_per_op": ns, "ns_min": min(values, default=ns),
                      "ns_max": max(values, default=ns), "repetitions": max(len(values), 1),
                      "error": None, **meta}
    for name, msg in errors.items():
        rows.setdefault(name, {"ns_per_op": None, "ns_min": None, "ns_max": None, "ops": 1.0,
                               "bytes": 0.0, "repetitions": 0, "error": msg})
    return {"path": path, "context": doc["context"], "rows": rows}


def results_in(path):
    """The userblk_micro JSON files at path: the file itself, or the *.json files of a folder
    (not its subfolders), each loaded; files that are not benchmark output are left out."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".json"))
    else:
        files = [path]
    out = []
    for f in files:
        try:
            out.append(load(f))
        except MicroError:
            if not os.path.isdir(path):
                raise
    return out


def newest_per_platform(results):
    """{platform: result}: the newest run of each platform by the context's date."""
    best = {}
    for r in results:
        p = r["context"].get("platform", "host")
        if p not in best or r["context"].get("date", "") > best[p]["context"].get("date", ""):
            best[p] = r
    return best


def per_io_4k(result):
    """[(ns, primitive)] of what one 4 KiB I/O pays per primitive: the 4 KiB size of every data
    primitive and every primitive that moves no data (wake-ups, NOPs, descriptor handling),
    most expensive first."""
    out = []
    for name, row in result["rows"].items():
        if row["ns_per_op"] is None:
            continue
        if row["bytes"] in (0.0, 4096.0):
            out.append((row["ns_per_op"], name))
    return sorted(out, reverse=True)


def describe(result):
    c = result["context"]
    return (f"{c.get('run_id', '?')}: platform {c.get('platform', '?')}, accelerator "
            f"{c.get('accelerator', '?')}, kernel {c.get('kernel', '?').split(' ')[0]}, "
            f"{c.get('cpu_model', '?')}")


def format_ns(ns):
    if ns is None:
        return "-"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} us"
    return f"{ns:.1f} ns"
