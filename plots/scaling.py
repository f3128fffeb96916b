#!/usr/bin/python3
"""Figure 2: IOPS against queue depth, per transport.

  python3 -m plots.scaling [RESULTS] [--out DIR]

4 KiB random reads with one fio job at every depth the results hold (randread-4k-qd<N>: the
paper set has 1, 4, 16, 32 and 128), the median over the repetitions with min-max bars;
null_blk and brd dashed. Writes DIR/scaling.{png,pdf}.
"""

import re
import sys

from plots import _reproducible  # noqa: E402,F401
import matplotlib.pyplot as plt  # noqa: E402
from plots import _results as R  # noqa: E402

PROG = "plots/scaling.py"
NAME = re.compile(r"^randread-4k-qd(\d+)$")


def main():
    res, out = R.main_args(PROG, __doc__)
    depths = sorted({int(m.group(1)) for r in res.rows()
                     for m in [NAME.match(r["workload"])] if m})
    if len(depths) < 2:
        R.skip(PROG, "fewer than two depths of randread-4k-qd<N>")
    names = [f"randread-4k-qd{d}" for d in depths]
    fig, ax = plt.subplots(figsize=(7, 4.6))
    used = []
    for t in res.transports(names):
        pts = []
        for d, w in zip(depths, names):
            row = res.main_row(t, w, workloads=names)
            med, (lo, hi) = R.err(row, "iops", 1e-3) if row else (None, (0, 0))
            if med is not None:
                used.append(row)
                pts.append((d, med, lo, hi))
        if not pts:
            continue
        colour, marker = R.style(t)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                    yerr=[[p[2] for p in pts], [p[3] for p in pts]], color=colour,
                    marker=marker, ms=5, lw=1.2, ls=R.linestyle(t), capsize=2,
                    label=res.label(t, names))
    ax.set_xscale("log", base=2)
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.set_xlabel("queue depth (one fio job)")
    ax.set_ylabel("thousand IOPS")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    R.finish(fig, res, used, out, "scaling",
             "Figure 2: 4 KiB random-read IOPS against queue depth (median, bars min-max)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
