"""Shared by the figure scripts and paper/macros.py: reading a results directory, and the one
colour and marker of each transport.

A results directory is one run directory of `make bench` (it has summary.json), or a folder of
them: results/reference/ holds runs/<run-id>/ (docs/results-schema.md; `make reference`
compresses the raw files there, so every raw file is read as NAME or NAME.gz) and micro/.

Rows are summary.json's rows, one per (transport, backend, workload) over its repetitions.
When several runs hold a measured row of the same (transport, backend, workload) - make sweep's
two runs both measure null_blk and brd - the row of the main run is used: the run of the paper
set, else the run with the most measured rows; among the others, the newest. Runs of different
platforms or accelerators are never mixed: numbers compare only within one platform.
"""

import gzip
import json
import os
import statistics
import zlib

DEFAULT_RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "results", "reference")

# Drawing order and fixed style of the known transports: (colour, marker). Userblk's own
# transports first, then the baselines, then the references drawn as bars or lines. The
# colours are the Okabe-Ito palette (distinguishable with the common colour deficiencies).
STYLE = {
    "copy": ("#0072B2", "o"),
    "ring": ("#D55E00", "s"),
    "pipe": ("#009E73", "^"),
    "splice": ("#CC79A7", "D"),
    "ublk": ("#E69F00", "v"),
    "nbd": ("#56B4E9", "P"),
    "nbdkit": ("#7F7F7F", "X"),
    "loop": ("#8C564B", "h"),
    "null_blk": ("#000000", "*"),
    "brd": ("#999999", "p"),
}
ORDER = list(STYLE)
# The references drawn as lines, not bars, in the per-transport figures.
LINE_REFERENCES = ("null_blk", "brd")
# A transport added later gets one of these, always the same one for the same name.
EXTRA_COLOURS = ("#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#BCBD22", "#17BECF")
EXTRA_MARKERS = ("o", "s", "^", "D", "v", "<", ">")
# Backends of the main figures, in order of preference: references have none ("-").
MAIN_BACKENDS = ("-", "null", "ram", "file")


class ResultsError(Exception):
    pass


def style(transport):
    """(colour, marker) of a transport. A variant (ring:poll-us=50) keeps its base's colour
    with a marker of its own; a transport added later gets a colour and marker derived from
    its name, the same in every figure."""
    base = transport.split(":", 1)[0]
    h = zlib.crc32(transport.encode())
    if base in STYLE:
        colour, marker = STYLE[base]
        if base != transport:
            others = [m for m in EXTRA_MARKERS if m != marker]
            marker = others[h % len(others)]
        return colour, marker
    return EXTRA_COLOURS[h % len(EXTRA_COLOURS)], EXTRA_MARKERS[(h >> 8) % len(EXTRA_MARKERS)]


def linestyle(transport):
    """Dashed for the kernel-only references, dotted for variants, solid otherwise."""
    if transport in LINE_REFERENCES:
        return "--"
    return ":" if ":" in transport else "-"


def order_key(transport):
    base = transport.split(":", 1)[0]
    return (ORDER.index(base) if base in ORDER else len(ORDER), transport)


def open_raw(path):
    """A raw file, plain or gzip-compressed (NAME.gz); None when neither exists."""
    if os.path.exists(path):
        return open(path, "rb")
    if os.path.exists(path + ".gz"):
        return gzip.open(path + ".gz", "rb")
    return None


def read_json(path):
    f = open_raw(path)
    if f is None:
        return None
    with f:
        text = f.read().decode(errors="replace")
    start = text.find("{")  # fio may print warnings before its JSON
    try:
        return json.loads(text[start:] if start >= 0 else text)
    except ValueError as e:
        raise ResultsError(f"{path}: does not parse: {e}") from None


class Run:
    def __init__(self, path):
        self.path = path
        self.summary = read_json(os.path.join(path, "summary.json"))
        if self.summary is None:
            raise ResultsError(f"{path}: no summary.json")
        self.meta = read_json(os.path.join(path, "meta.json")) or {}
        self.plan = read_json(os.path.join(path, "plan.json")) or {}
        self.id = self.summary.get("run_id") or os.path.basename(path)

    def workload_set(self):
        return (self.plan.get("settings") or {}).get("workload_set")

    def measured(self):
        return sum(1 for r in self.summary.get("rows", []) if r.get("reps"))

    def rows(self):
        for r in self.summary.get("rows", []):
            yield dict(r, run=self)

    def fio(self, row, rep):
        """fio.json of one repetition of a row, or None."""
        backend = "none" if row["backend"] == "-" else row["backend"]
        return read_json(os.path.join(self.path, "cells", row["transport"], backend,
                                      row["workload"], f"rep{rep}", "fio.json"))

    def cell(self, row, rep):
        backend = "none" if row["backend"] == "-" else row["backend"]
        return read_json(os.path.join(self.path, "cells", row["transport"], backend,
                                      row["workload"], f"rep{rep}", "cell.json"))

    def describe(self):
        s, m = self.summary, self.meta
        kernel = (m.get("platform") or {}).get("kernel", "?")
        commit = ((m.get("git") or {}).get("commit") or "?")[:12]
        reps = (self.plan.get("settings") or {}).get("reps", "?")
        return (f"run {self.id}: {s.get('platform', '?')}/{s.get('accel', '?')}, "
                f"kernel {kernel}, {s.get('fio_version', 'fio ?')}, {reps} reps, "
                f"commit {commit}")


class Results:
    def __init__(self, path):
        self.path = path
        if not os.path.isdir(path):
            raise ResultsError(f"{path} is not a directory")
        self.runs = [Run(p) for p in run_dirs(path)]
        self.runs.sort(key=lambda r: r.id)
        platforms = {(r.summary.get("platform"), r.summary.get("accel")) for r in self.runs}
        if len(platforms) > 1:
            raise ResultsError(f"{path} mixes runs of different platforms "
                               f"({', '.join(sorted(f'{p}/{a}' for p, a in platforms))}): "
                               "numbers compare only within one; give one platform's runs")
        self.main = max(self.runs, key=lambda r: (r.workload_set() == "paper", r.measured(),
                                                 r.id), default=None)
        rows = {}
        # the main run last, the others oldest first: a later measured row replaces one before
        for run in sorted(self.runs, key=lambda r: (r is self.main, r.id)):
            for r in run.rows():
                key = (r["transport"], r["backend"], r["workload"])
                if r.get("reps") or key not in rows:
                    rows[key] = r
        self._rows = rows

    def row(self, transport, backend, workload):
        return self._rows.get((transport, backend, workload))

    def rows(self, ok_only=True):
        return [r for r in self._rows.values() if not ok_only or r.get("reps")]

    def transports(self, workloads, backends=MAIN_BACKENDS):
        """Transports with a measured row of one of the workloads on the main backends,
        in drawing order."""
        names = {r["transport"] for r in self.rows()
                 if r["workload"] in workloads and r["backend"] in backends}
        return sorted(names, key=order_key)

    def backend_of(self, transport, workloads, backends=MAIN_BACKENDS):
        """The one backend a transport is drawn on in a figure of these workloads: the first of
        backends (null before ram, ...) with a measured row of any of them."""
        for b in backends:
            if any((self.row(transport, b, w) or {}).get("reps") for w in workloads):
                return b
        return None

    def main_row(self, transport, workload, backends=MAIN_BACKENDS, workloads=None):
        """The measured row of a transport on its backend for the figure's workloads (default:
        this workload alone), or None."""
        b = self.backend_of(transport, workloads or [workload], backends)
        r = self.row(transport, b, workload) if b else None
        return r if r and r.get("reps") else None

    def label(self, transport, workloads, backends=MAIN_BACKENDS):
        """A transport's legend label; the backend is named when it is not null."""
        b = self.backend_of(transport, workloads, backends)
        return transport if b in (None, "-", "null") else f"{transport} ({b})"

    def stamp(self, used_rows):
        """The lines that say where the rows of a figure come from."""
        ids = sorted({r["run"].id for r in used_rows})
        return "\n".join(run.describe() for run in self.runs if run.id in ids)


def run_dirs(path):
    if os.path.exists(os.path.join(path, "summary.json")):
        return [path]
    found = []
    for sub in (path, os.path.join(path, "runs")):
        if not os.path.isdir(sub):
            continue
        for name in sorted(os.listdir(sub)):
            p = os.path.join(sub, name)
            if os.path.isdir(p) and os.path.exists(os.path.join(p, "summary.json")):
                found.append(p)
    return found


def percentiles(fio, kind="lat_ns"):
    """[(percent, µs)] of a fio result's reads and writes together (the "mixed" entry of
    unified_rw_reporting=both, else the direction with the most I/Os), kind lat_ns (submission
    to completion) or clat_ns."""
    job = (fio.get("jobs") or [{}])[0]
    d = job.get("mixed")
    if not d or not (d.get(kind) or {}).get("N"):
        d = max((job.get(k) or {} for k in ("read", "write")),
                key=lambda x: (x.get(kind) or {}).get("N", 0))
    pct = (d.get(kind) or {}).get("percentile") or {}
    return sorted((float(k), v / 1000.0) for k, v in pct.items())


def percentile_of(fio, pct, kind="lat_ns"):
    for p, v in percentiles(fio, kind):
        if abs(p - pct) < 1e-9:
            return v
    return None


def rep_numbers(row):
    return range(1, int(row.get("reps_planned") or row.get("reps") or 0) + 1)


def over_reps(row, value_of):
    """(median, min, max) of value_of(fio) over a row's measured repetitions, or None."""
    vals = []
    for rep in rep_numbers(row):
        cell = row["run"].cell(row, rep)
        if not cell or cell.get("status") != "ok":
            continue
        fio = row["run"].fio(row, rep)
        v = value_of(fio) if fio else None
        if v is not None:
            vals.append(v)
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def median_rep(row, metric="lat_total_mean_us"):
    """The repetition whose metric is the median one (the lower middle of an even count)."""
    vals = []
    for rep in rep_numbers(row):
        cell = row["run"].cell(row, rep)
        if cell and cell.get("status") == "ok":
            v = (cell.get("metrics") or {}).get(metric)
            if v is not None:
                vals.append((v, rep))
    if not vals:
        return None
    vals.sort()
    return vals[(len(vals) - 1) // 2][1]


def err(row, metric, scale=1.0):
    """Median and the min-max distance below and above it, of a summary metric."""
    med, lo, hi = (row.get(f"{metric}_{k}") for k in ("median", "min", "max"))
    if med is None:
        return None, (0.0, 0.0)
    return med * scale, ((med - (lo if lo is not None else med)) * scale,
                         ((hi if hi is not None else med) - med) * scale)


def series(points, metric, scale=1.0):
    """A line of points [(x, row)]: (xs, ys, (below, above), rows drawn), where a row without
    the metric is left out and below/above are the min-max distances of R.err."""
    xs, ys, lo, hi, used = [], [], [], [], []
    for x, row in points:
        y, (below, above) = err(row, metric, scale) if row else (None, (0.0, 0.0))
        if y is None:
            continue
        xs.append(x)
        ys.append(y)
        lo.append(below)
        hi.append(above)
        used.append(row)
    return xs, ys, (lo, hi), used


def main_args(prog, doc):
    """The command line every figure script has: [RESULTS] [--out DIR]. Returns (Results, out);
    exits 77 (make figures skips the figure) when the results directory has no run."""
    import argparse
    import sys

    from plots import _reproducible

    ap = argparse.ArgumentParser(prog=prog, description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", default=DEFAULT_RESULTS,
                    help="a results directory: a run of make bench, or a folder of runs "
                         "(default results/reference)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(DEFAULT_RESULTS), "..",
                                                  "paper", "figures"),
                    help="output folder (default paper/figures)")
    a = ap.parse_args()
    if not os.path.isdir(a.results):
        print(f"{prog}: {a.results} does not exist (make sweep, then make reference, writes "
              "results/reference); skipped")
        sys.exit(_reproducible.EXIT_NO_INPUT)
    try:
        res = Results(a.results)
    except ResultsError as e:
        sys.exit(f"{prog}: {e}")
    if not res.runs:
        print(f"{prog}: no run of make bench in {a.results} (a run has summary.json); skipped")
        sys.exit(_reproducible.EXIT_NO_INPUT)
    return res, os.path.normpath(a.out)


def skip(prog, what):
    import sys

    from plots import _reproducible

    print(f"{prog}: {what}; skipped")
    sys.exit(_reproducible.EXIT_NO_INPUT)


def panels(prog, res, workloads, panel, width, height):
    """One panel per (workload, panel title) present in the results, side by side, drawn by
    panel(ax, res, workload, title, used); exits 77 when none is. Returns (fig, axes, used)."""
    import matplotlib.pyplot as plt

    present = [(w, t) for w, t in workloads if res.transports([w])]
    if not present:
        skip(prog, "no " + " or ".join(w for w, _ in workloads) + " rows")
    fig, axes = plt.subplots(1, len(present), figsize=(width * len(present), height),
                             squeeze=False)
    used = []
    for ax, (w, t) in zip(axes[0], present):
        panel(ax, res, w, t, used)
    return fig, axes[0], used


def parts_legend(ax, parts, **kw):
    """The key of a bar stacked from CPU parts [(column, label, alpha)], shaded from darkest
    (the first part) to lightest."""
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(facecolor="#555555", alpha=a, label=label) for _, label, a in parts],
              fontsize=7, title="darkest to lightest", title_fontsize=7, **kw)


def finish(fig, res, used_rows, out, name, title):
    """Title, provenance stamp at the bottom, layout, PNG + PDF."""
    from plots import _reproducible

    stamp = res.stamp(used_rows)
    lines = stamp.count("\n") + 1
    fig.suptitle(title, fontsize=11)
    fig.text(0.01, 0.005, stamp, fontsize=6, va="bottom", ha="left", family="monospace")
    fig.tight_layout(rect=(0, 0.012 + 0.014 * lines, 1, 0.96))
    for path in _reproducible.save(fig, out, name):
        print(f"wrote {os.path.relpath(path)}")
