"""Comparing two runs cell by cell: ratios of medians, flagged where the change is beyond
the spread (the two runs' min-max ranges do not overlap) and at least min_change_pct (with
three repetitions the ranges are narrow, and a 2 % drift would be flagged otherwise)."""

import os

from . import results

# (summary column stem, label, higher is better)
COMPARED = (
    ("iops", "IOPS", True),
    ("lat_total_mean_us", "lat", False),
    ("lat_mean_us", "clat", False),
    ("lat_p99_us", "clat p99", False),
    ("cpu_us_per_io", "CPU/IO", False),
)


def load(run):
    """A run directory (or its summary.csv) -> (name, {(t, b, w): row}, meta)."""
    path = run
    if os.path.isdir(run):
        path = os.path.join(run, "summary.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {run} a run directory "
                                "(results/runs/<run-id>) with a summary?")
    rows = results.read_summary_csv(path)
    meta = results.read_json(os.path.join(os.path.dirname(path), "meta.json"), {})
    name = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return name, {(r["transport"], r["backend"], r["workload"]): r for r in rows}, meta


def changed(a, b, stem, min_change_pct=0.0):
    """'+' or '-' if b's range lies wholly above or below a's and the medians differ by at
    least min_change_pct; '' otherwise (or no data)."""
    lo_a, hi_a = a.get(f"{stem}_min"), a.get(f"{stem}_max")
    lo_b, hi_b = b.get(f"{stem}_min"), b.get(f"{stem}_max")
    if None in (lo_a, hi_a, lo_b, hi_b):
        return ""
    r = ratio(a, b, stem)
    if r is not None and abs(r - 1) * 100 < min_change_pct:
        return ""
    if lo_b > hi_a:
        return "+"
    if hi_b < lo_a:
        return "-"
    return ""


def ratio(a, b, stem):
    va, vb = a.get(f"{stem}_median"), b.get(f"{stem}_median")
    if va in (None, 0) or vb is None:
        return None
    return vb / va


def compare(rows_a, rows_b, min_change_pct=5.0):
    """-> list of dicts, one per cell present in both runs, in run A's order."""
    out = []
    for key, a in rows_a.items():
        b = rows_b.get(key)
        if b is None:
            continue
        item = {"transport": key[0], "backend": key[1], "workload": key[2],
                "status_a": a.get("status"), "status_b": b.get("status"),
                "iodepth": a.get("iodepth"), "jobs": a.get("jobs")}
        for stem, _, _ in COMPARED:
            item[f"{stem}_a"] = a.get(f"{stem}_median")
            item[f"{stem}_b"] = b.get(f"{stem}_median")
            item[f"{stem}_ratio"] = ratio(a, b, stem)
            item[f"{stem}_flag"] = changed(a, b, stem, min_change_pct)
        out.append(item)
    return out


def qd1_latency_check(items, threshold_pct, stem="lat_total_mean_us"):
    """The QD1 (one job) latency cells: (number of cells, largest |B/A - 1| in %, cells over).

    stem: lat_total_mean_us (submission + completion, the I/O's whole latency) or
    lat_mean_us (completion only, about 1 us for devices that complete during submission).
    """
    key = f"{stem}_ratio"
    qd1 = [i for i in items if i.get("iodepth") == 1 and (i.get("jobs") or 1) == 1
           and i.get(key) is not None]
    if not qd1:
        return 0, None, []
    worst = max(abs(i[key] - 1) * 100 for i in qd1)
    over = [i for i in qd1 if abs(i[key] - 1) * 100 > threshold_pct]
    return len(qd1), worst, over


def _fmt(v):
    """Three significant digits or so."""
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e4:
        return f"{v / 1e3:.1f}k"
    if a >= 1e3:
        return f"{v / 1e3:.2f}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def busy_rows(rows, threshold=0.25):
    """Rows measured while the host was busy (hostload.py): other processes or steal."""
    return [r for r in rows.values()
            if max(r.get("host_other_cores_max") or 0, r.get("host_steal_cores_max") or 0)
            > threshold]


def render(name_a, name_b, items, meta_a=None, meta_b=None, threshold_pct=10.0,
           busy_a=0, busy_b=0, min_change_pct=5.0):
    lines = [f"compare A={name_a}  B={name_b}  (ratio = B/A of medians; '*' = changed beyond "
             "the spread: the min-max ranges do not overlap and the medians differ by at least "
             f"{min_change_pct:g}%; +/- says which way)"]
    pa = (meta_a or {}).get("platform", {})
    pb = (meta_b or {}).get("platform", {})
    if pa and pb and (pa.get("name"), pa.get("accel")) != (pb.get("name"), pb.get("accel")):
        lines.append(f"warning: different platforms: A {pa.get('name')}/{pa.get('accel')}, "
                     f"B {pb.get('name')}/{pb.get('accel')}: numbers compare only within one")
    head = ["workload", "transport", "backend"]
    for _, label, _ in COMPARED:
        head += [f"{label} A", "B", "B/A"]
    table = [head]
    for i in items:
        row = [i["workload"], i["transport"], i["backend"]]
        for stem, _, _ in COMPARED:
            flag = i[f"{stem}_flag"]
            r = i[f"{stem}_ratio"]
            row += [_fmt(i[f"{stem}_a"]), _fmt(i[f"{stem}_b"]),
                    ("-" if r is None else f"{r:.2f}") + (f" *{flag}" if flag else "")]
        table.append(row)
    widths = [max(len(r[c]) for r in table) for c in range(len(head))]
    for r in table:
        lines.append("  ".join(c.ljust(widths[k]) if k < 3 else c.rjust(widths[k])
                               for k, c in enumerate(r)).rstrip())
    flagged = sum(1 for i in items for stem, _, _ in COMPARED if i[f"{stem}_flag"])
    lines.append(f"{len(items)} cells compared; {flagged} numbers changed beyond the spread")
    for stem, what in (("lat_total_mean_us", "QD1 latency (submission to completion, mean)"),
                       ("lat_mean_us", "QD1 completion latency (clat, mean)")):
        n, worst, over = qd1_latency_check(items, threshold_pct, stem)
        if not n:
            continue
        verdict = "yes" if not over else "no: " + ", ".join(
            f"{i['transport']}/{i['backend']} {i['workload']} "
            f"{(i[f'{stem}_ratio'] - 1) * 100:+.1f}%" for i in over)
        lines.append(f"{what}, medians of reps: {n} cells, largest difference "
                     f"{worst:.1f}%; all within {threshold_pct:g}%: {verdict}")
    for name, busy in (("A", busy_a), ("B", busy_b)):
        if busy:
            lines.append(f"note: the host was busy (other processes or steal) during {busy} "
                         f"rows of run {name}: their numbers are slow and spread")
    missing = [k for k in ("status_a", "status_b")
               if any(i[k] not in ("ok", "partial") for i in items)]
    if missing:
        lines.append("note: some cells failed in " + " and ".join(
            "A" if k == "status_a" else "B" for k in missing) + ": their ratios are '-'")
    return "\n".join(lines) + "\n"
