#!/usr/bin/python3
"""Figure 5: the distribution of the latency of 4 KiB I/Os at QD1, per transport.

  python3 -m plots.cdf [RESULTS] [--out DIR]

The percentiles fio reports of the total latency (lat_ns: submission to completion;
workloads/latency.fio asks for 19 of them, 1 to 99.99) of randread-4k-qd1 and
randwrite-4k-qd1, drawn as a cumulative distribution, of the repetition whose mean is the
median one (a CDF is not averaged over repetitions). Results without total-latency
percentiles (fio's default) fall back to the completion latency (clat), and the panel says
so. Writes DIR/cdf.{png,pdf}.
"""

import sys

from plots import _reproducible  # noqa: E402,F401
from plots import _results as R  # noqa: E402

PROG = "plots/cdf.py"
WORKLOADS = (("randread-4k-qd1", "4 KiB random reads, QD1"),
             ("randwrite-4k-qd1", "4 KiB random writes, QD1"))


def panel(ax, res, workload, title, used):
    curves = []
    for t in res.transports([workload]):
        row = res.main_row(t, workload)
        rep = R.median_rep(row) if row else None
        fio = row["run"].fio(row, rep) if rep else None
        if fio:
            curves.append((t, row, fio))
    # One kind for the whole panel: total latency when every curve has it, else clat for all,
    # without null_blk and brd, whose clat (about 1 us) does not compare.
    kind = "lat_ns"
    if not all(R.percentiles(fio, kind) for _, _, fio in curves):
        kind = "clat_ns"
        curves = [c for c in curves if c[0] not in R.LINE_REFERENCES]
    for t, row, fio in curves:
        pts = R.percentiles(fio, kind)
        if not pts:
            continue
        used.append(row)
        colour, marker = R.style(t)
        ax.step([v for _, v in pts], [p for p, _ in pts], where="post", color=colour,
                lw=1.3, ls=R.linestyle(t), label=res.label(t, [workload]))
        ax.plot([v for _, v in pts], [p for p, _ in pts], ls="none", marker=marker, ms=3,
                color=colour)
    ax.set_xscale("log")
    ax.set_xlabel("total latency, us (log)" if kind == "lat_ns" else
                  "completion latency (clat), us (log): these results have no total-latency "
                  "percentiles", fontsize=9 if kind == "lat_ns" else 7)
    ax.set_ylabel("percent of I/Os at or below")
    ax.set_ylim(0, 100.5)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")


def main():
    res, out = R.main_args(PROG, __doc__)
    fig, axes, used = R.panels(PROG, res, WORKLOADS, panel, 5.4, 4.4)
    R.finish(fig, res, used, out, "cdf",
             "Figure 5: latency distribution at QD1 (the median repetition of each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
