#!/usr/bin/python3
"""Figure 3: bandwidth against block size, reads and writes, per transport.

  python3 -m plots.bandwidth [RESULTS] [--out DIR]

Sequential reads and writes at QD4 of every block size the results hold (read-<bs>-qd4,
write-<bs>-qd4: the paper set has 4, 16, 64, 256 KiB and 1 MiB), the median over the
repetitions with min-max bars; null_blk and brd dashed. Writes DIR/bandwidth.{png,pdf}.
"""

import re
import sys

from plots import _reproducible  # noqa: E402,F401
import matplotlib.pyplot as plt  # noqa: E402
from plots import _results as R  # noqa: E402

PROG = "plots/bandwidth.py"
NAME = re.compile(r"^(read|write)-(\d+[km])-qd4$")


def size_label(b):
    return f"{b // 1024} KiB" if b < 1 << 20 else f"{b >> 20} MiB"


def panel(ax, res, rw, used):
    sizes = {}
    for r in res.rows():
        m = NAME.match(r["workload"])
        if m and m.group(1) == rw and r.get("bs_bytes"):
            sizes[r["workload"]] = r["bs_bytes"]
    names = sorted(sizes, key=sizes.get)
    for t in res.transports(names):
        pts = []
        for w in names:
            row = res.main_row(t, w, workloads=names)
            med, (lo, hi) = R.err(row, "bw_mibps") if row else (None, (0, 0))
            if med is not None:
                used.append(row)
                pts.append((sizes[w], med, lo, hi))
        if not pts:
            continue
        colour, marker = R.style(t)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                    yerr=[[p[2] for p in pts], [p[3] for p in pts]], color=colour,
                    marker=marker, ms=5, lw=1.2, capsize=2, ls=R.linestyle(t),
                    label=res.label(t, names))
    ticks = sorted(set(sizes.values()))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ticks, [size_label(b) for b in ticks])
    ax.set_xlabel("block size (sequential, QD4)")
    ax.set_ylabel("MiB/s (log)")
    ax.set_title("reads" if rw == "read" else "writes", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    return len(names)


def main():
    res, out = R.main_args(PROG, __doc__)
    if not any(NAME.match(r["workload"]) for r in res.rows()):
        R.skip(PROG, "no read-<bs>-qd4 or write-<bs>-qd4 rows")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    used = []
    for ax, rw in zip(axes, ("read", "write")):
        panel(ax, res, rw, used)
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[1].get_legend_handles_labels()
    axes[1].legend(handles, labels, fontsize=8, ncol=2, loc="lower right")
    R.finish(fig, res, used, out, "bandwidth",
             "Figure 3: bandwidth against block size (median, bars min-max)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
