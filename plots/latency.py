#!/usr/bin/python3
"""Figure 1: the latency of one 4 KiB I/O at queue depth 1, per transport.

  python3 -m plots.latency [RESULTS] [--out DIR]

Bars: the mean and the 99th percentile of the total latency (fio's lat: submission to
completion, what one I/O costs the application), randread-4k-qd1 and randwrite-4k-qd1, the
median over the repetitions with min-max whiskers. The kernel-only null_blk and brd are the
horizontal lines (solid: mean, dashed: p99): the floor any driver pays in this platform's
block layer. Total latency, not clat: null_blk and brd complete inside the submission, so their
clat is about 1 us and only the total compares. Writes DIR/latency.{png,pdf}.
"""

import sys

from plots import _reproducible  # noqa: E402,F401
from plots import _results as R  # noqa: E402

PROG = "plots/latency.py"
WORKLOADS = (("randread-4k-qd1", "4 KiB random reads, QD1"),
             ("randwrite-4k-qd1", "4 KiB random writes, QD1"))


def p99(row):
    return R.over_reps(row, lambda fio: R.percentile_of(fio, 99.0))


def panel(ax, res, workload, title, used):
    from matplotlib.patches import Patch

    bars = [t for t in res.transports([workload]) if t not in R.LINE_REFERENCES]
    width = 0.38
    any_p99 = False
    for i, t in enumerate(bars):
        row = res.main_row(t, workload)
        mean, mean_err = R.err(row, "lat_total_mean_us") if row else (None, (0, 0))
        if mean is None:
            continue
        used.append(row)
        colour, _ = R.style(t)
        ax.bar(i - width / 2, mean, width, color=colour,
               yerr=[[mean_err[0]], [mean_err[1]]], capsize=2, error_kw={"elinewidth": 0.7})
        tail = p99(row)
        if tail:
            any_p99 = True
            ax.bar(i + width / 2, tail[0], width, color=colour, alpha=0.45, hatch="//",
                   edgecolor=colour, yerr=[[tail[0] - tail[1]], [tail[2] - tail[0]]],
                   capsize=2, error_kw={"elinewidth": 0.7})
    for t in R.LINE_REFERENCES:
        row = res.main_row(t, workload)
        mean = row.get("lat_total_mean_us_median") if row else None
        if mean is None:
            continue
        used.append(row)
        colour, _ = R.style(t)
        ax.axhline(mean, color=colour, lw=1, ls="-", label=f"{t} mean")
        tail = p99(row)
        if tail:
            ax.axhline(tail[0], color=colour, lw=1, ls="--", label=f"{t} p99")
    handles, labels = ax.get_legend_handles_labels()
    grey = "#BBBBBB"
    keys = [(Patch(facecolor=grey), "mean")]
    if any_p99:
        keys.append((Patch(facecolor=grey, alpha=0.45, hatch="//"), "p99"))
    ax.set_xticks(range(len(bars)), [res.label(t, [workload]) for t in bars], rotation=30,
                  ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("latency, us (log)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.25)
    ax.legend([k[0] for k in keys] + handles, [k[1] for k in keys] + labels, fontsize=7,
              loc="upper left", ncol=2)


def main():
    res, out = R.main_args(PROG, __doc__)
    fig, axes, used = R.panels(PROG, res, WORKLOADS, panel, 5.2, 4.2)
    R.finish(fig, res, used, out, "latency",
             "Figure 1: latency of a 4 KiB I/O at QD1, submission to completion\n"
             "(median of the repetitions, whiskers min-max)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
