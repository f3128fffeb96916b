#!/usr/bin/python3
"""Figure 4: CPU time per I/O, stacked into fio, the daemon and the rest.

  python3 -m plots.cpu [RESULTS] [--out DIR]

4 KiB random reads at QD1 and at QD32 (and 4 KiB random writes at QD1): every process's CPU
time in fio's measured window over its I/Os (docs/results-schema.md, "How CPU per I/O is
measured"), split into fio's process, the daemon (the `userblk add` process, its threads and
its children: nbd's NBD_DO_IT, the nbdkit reference's server), a storage server the harness
started (none on the null backend) and the rest (kernel threads, softirqs, other processes;
the harness's own sampling is left out). Each part is the median over the repetitions; the
black tick is the median of the total with min-max whiskers (medians of parts need not add up
to the median of the whole). Writes DIR/cpu.{png,pdf}.
"""

import sys

from plots import _reproducible  # noqa: E402,F401
from plots import _results as R  # noqa: E402

PROG = "plots/cpu.py"
WORKLOADS = (("randread-4k-qd1", "4 KiB random reads, QD1"),
             ("randread-4k-qd32", "4 KiB random reads, QD32"),
             ("randwrite-4k-qd1", "4 KiB random writes, QD1"))
PARTS = (("cpu_fio_us_per_io", "fio", 1.0),
         ("cpu_daemon_us_per_io", "daemon", 0.7),
         ("cpu_server_us_per_io", "server", 0.45),
         ("cpu_other_us_per_io", "rest", 0.2))


def panel(ax, res, workload, title, used):
    names = res.transports([workload])
    for i, t in enumerate(names):
        row = res.main_row(t, workload)
        if not row or row.get("cpu_us_per_io_median") is None:
            continue
        used.append(row)
        colour, _ = R.style(t)
        bottom = 0.0
        for key, label, alpha in PARTS:
            v = row.get(f"{key}_median")
            if not v:
                continue
            ax.bar(i, v, 0.7, bottom=bottom, color=colour, alpha=alpha, edgecolor="white",
                   lw=0.4)
            bottom += v
        total, (lo, hi) = R.err(row, "cpu_us_per_io")
        if total is not None:
            ax.errorbar([i], [total], yerr=[[lo], [hi]], fmt="_", color="black", ms=14,
                        capsize=2, lw=0.8)
    ax.set_xticks(range(len(names)), [res.label(t, [workload]) for t in names], rotation=35,
                  ha="right")
    ax.set_ylabel("CPU us per I/O")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)


def main():
    res, out = R.main_args(PROG, __doc__)
    fig, axes, used = R.panels(PROG, res, WORKLOADS, panel, 4.4, 4.6)
    R.parts_legend(axes[0], PARTS, loc="upper left")
    R.finish(fig, res, used, out, "cpu",
             "Figure 4: CPU time per I/O: fio, daemon, server, rest (medians; tick: total, "
             "whiskers min-max)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
