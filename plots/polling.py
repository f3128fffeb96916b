#!/usr/bin/python3
"""Polling at queue depth 1: what removing the wake-ups buys, and the cores it burns.

  python3 -m plots.polling [RESULTS] [--out DIR]

`make poll`'s matrix (and `make sweep`'s third run): 4 KiB random I/O at QD1 with fio sleeping
for its completion (plain) and with fio polling (-hipri: io_uring IOPOLL), for every transport
and variant the results hold those workloads for. Top row, reads and writes at QD1: IOPS, and
the total latency of a read (submission + completion, `lat_total_mean_us`). Bottom row, the
cost of the same reads: busy cores (whole-system CPU time per second; 2 is the whole guest),
CPU time per I/O, and polled reads at QD 1, 32 and 128. Hatched bars are polled I/O; a
transport marked "spins" has a daemon that spins on its ring (--spin-us, --poll-us). Bars are
medians, whiskers min-max over the repetitions. Every row is from one run, the newest that has
polled rows: plain and polled cells are compared only as measured side by side. make poll
measures on null:fill=none (reads that leave the buffer as it is, as null_blk's do); its rows
come first, then those of the main backends. Writes DIR/polling.{png,pdf}.
"""

import sys

from plots import _reproducible  # noqa: F401
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from plots import _results as R  # noqa: E402

PROG = "plots/polling.py"
READ, WRITE = "randread-4k-qd1", "randwrite-4k-qd1"
HIPRI = "-hipri"
# make poll's backend first: a run on it is drawn on it, one on plain null (older runs) on null.
BACKENDS = ("-", "null:fill=none") + tuple(b for b in R.MAIN_BACKENDS if b != "-")
DEPTHS = ((1, "randread-4k-qd1-hipri"), (32, "randread-4k-qd32-hipri"),
          (128, "randread-4k-qd128-hipri"))
BARS = (("iops", READ, "4 KiB random reads, QD1: IOPS", 1.0),
        ("iops", WRITE, "4 KiB random writes, QD1: IOPS", 1.0),
        ("lat_total_mean_us", READ, "reads, QD1: latency (us)", 1.0),
        ("cpu_busy_cores", READ, "reads, QD1: busy cores", 1.0),
        ("cpu_us_per_io", READ, "reads, QD1: CPU us per I/O", 1.0))


def spins(transport):
    """Whether a variant's daemon spins on its ring (ring's --spin-us or --poll-us)."""
    return any(o.split("=", 1)[0] in ("spin-us", "poll-us") and not o.endswith("=0")
               for o in transport.split(":")[1:])


class OneRun:
    """The measured rows of the newest run with polled rows, by (transport, workload), each on
    the first of BACKENDS (null:fill=none, then null before ram) it was measured on."""

    def __init__(self, res):
        runs = [r for r in res.runs
                if any(x["workload"].endswith(HIPRI) and x.get("reps") for x in r.rows())]
        if not runs:
            R.skip(PROG, "no polled rows (-hipri workloads: make poll)")
        self.run = max(runs, key=lambda r: r.id)
        self.by_key = {}
        for b in reversed(BACKENDS):
            for x in self.run.rows():
                if x.get("reps") and x["backend"] == b:
                    self.by_key[(x["transport"], x["workload"])] = x

    def row(self, transport, workload):
        return self.by_key.get((transport, workload))

    def transports(self, workloads):
        return sorted({t for t, w in self.by_key if w in workloads}, key=R.order_key)


def label(rows, transport, workloads):
    backs = {rows.row(transport, w)["backend"] for w in workloads if rows.row(transport, w)}
    name = (transport if backs <= {"-", "null", "null:fill=none"}
            else f"{transport} ({', '.join(sorted(backs))})")
    return f"{name} (spins)" if spins(transport) else name


def bar_panel(ax, rows, names, metric, workload, title, scale, used):
    width = 0.38
    for i, t in enumerate(names):
        colour, _ = R.style(t)
        for k, (w, hatch) in enumerate(((workload, None), (workload + HIPRI, "///"))):
            row = rows.row(t, w)
            y, (lo, hi) = R.err(row, metric, scale) if row else (None, (0, 0))
            if y is None:
                continue
            used.append(row)
            x = i + (k - 0.5) * width
            ax.bar(x, y, width, color=colour, alpha=0.85 if hatch is None else 0.45,
                   hatch=hatch, edgecolor=colour if hatch else "white", lw=0.6)
            ax.errorbar([x], [y], yerr=[[lo], [hi]], fmt="none", ecolor="black", capsize=2,
                        lw=0.8)
    ax.set_xticks(range(len(names)), [label(rows, t, [workload, workload + HIPRI])
                                      for t in names], rotation=35, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(True, axis="y", alpha=0.3)


def depth_panel(ax, rows, used):
    names = rows.transports([w for _, w in DEPTHS])
    for t in names:
        xs, ys, yerr, drawn = R.series([(qd, rows.row(t, w)) for qd, w in DEPTHS], "iops")
        used += drawn
        if xs:
            colour, marker = R.style(t)
            ax.errorbar(xs, ys, yerr=yerr, color=colour, marker=marker, capsize=2,
                        linestyle=R.linestyle(t), label=label(rows, t, [w for _, w in DEPTHS]))
    ax.set_xscale("log", base=2)
    ax.set_xticks([qd for qd, _ in DEPTHS], [str(qd) for qd, _ in DEPTHS])
    ax.set_xlabel("queue depth")
    ax.set_title("polled 4 KiB random reads: IOPS", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)


def main():
    res, out = R.main_args(PROG, __doc__)
    rows = OneRun(res)
    names = rows.transports([READ, WRITE, READ + HIPRI, WRITE + HIPRI])
    fig, axes = plt.subplots(2, 3, figsize=(13.5, 8.2))
    used = []
    for ax, (metric, workload, title, scale) in zip(axes.flat, BARS):
        bar_panel(ax, rows, names, metric, workload, title, scale, used)
    depth_panel(axes.flat[5], rows, used)
    axes.flat[0].legend(handles=[Patch(facecolor="#777777", alpha=0.85, label="fio sleeps"),
                                 Patch(facecolor="#777777", alpha=0.45, hatch="///",
                                       label="fio polls (hipri)")], fontsize=7)
    backs = sorted({x["backend"] for x in rows.by_key.values()} - {"-"})
    R.finish(fig, res, used, out, "polling",
             "Polling at QD1: IOPS and latency, and the cores and CPU it costs (medians, "
             f"whiskers min-max; backend {', '.join(backs) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
