#!/usr/bin/python3
"""What a pipe per slot costs at scale: `make slots` (pipe against splice, queues x depth).

  python3 -m plots.slots [RESULTS] [--out DIR]

Rows of transport variants that set their own geometry (pipe:queues=Q:depth=D,
splice:queues=Q:depth=D), every backend and workload the results hold for them, drawn against
the slots (Q x D, log scale): the device's set-up time (`userblk add` to its node), the
daemon's open fds, the slab the device took once it was made (meminfo's Slab: exact to a few
KiB, where the whole of kernel memory moves by megabytes as earlier cells' memory is freed),
the kernel memory it held once fio had used it (slab, and pages the kernel keeps for itself:
meminfo's total less free, file cache and process memory; a pipe keeps a spare page once it
has carried data), and 4 KiB IOPS. Points are medians, whiskers min-max over the repetitions.
Writes DIR/slots.{png,pdf}.
"""

import re

from plots import _reproducible  # noqa: F401
import matplotlib.pyplot as plt  # noqa: E402
from plots import _results as R  # noqa: E402

PROG = "plots/slots.py"
VARIANT = re.compile(r"^(?P<base>[a-z0-9_]+):queues=(?P<q>\d+):depth=(?P<d>\d+)$")
PANELS = (("setup_s", "set-up time (s)", 1.0),
          ("daemon_fds", "daemon fds", 1.0),
          ("kernel_slab_setup_kib", "slab, device made (MiB)", 1 / 1024),
          ("kernel_mem_loaded_kib", "kernel memory, after fio (MiB)", 1 / 1024),
          ("iops", "IOPS", 1.0))


def main():
    res, out = R.main_args(PROG, __doc__)
    rows = [r for r in res.rows() if VARIANT.match(r["transport"])]
    if not rows:
        R.skip(PROG, "no rows of transports with their own geometry (make slots)")
    series = {}
    for r in rows:
        m = VARIANT.match(r["transport"])
        key = (m["base"], r["backend"], r["workload"])
        series.setdefault(key, []).append((int(m["q"]) * int(m["d"]), r))
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 4.2))
    used = []
    for (base, backend, workload), points in sorted(series.items(),
                                                    key=lambda kv: R.order_key(kv[0][0])):
        points.sort(key=lambda p: p[0])
        colour, marker = R.style(base)
        label = f"{base} ({backend}, {workload})"
        for ax, (metric, title, scale) in zip(axes, PANELS):
            xs, ys, yerr, drawn = R.series(points, metric, scale)
            used += drawn
            if xs:
                ax.errorbar(xs, ys, yerr=yerr, color=colour, marker=marker, capsize=3,
                            label=label)
            ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("slots (queues x depth)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    R.finish(fig, res, used, out, "slots", "A pipe per slot against one data fd per queue")


if __name__ == "__main__":
    main()
