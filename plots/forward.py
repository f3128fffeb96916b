#!/usr/bin/python3
"""Figure 6: forwarding: CPU per byte and bytes into user space, backend forward.

  python3 -m plots.forward [RESULTS] [--out DIR]

Every transport measured on the forward backend (the paper-forward set: copy, pipe and splice,
each request sent on to an NBD server, nbdkit memory on 127.0.0.1), at every sequential
workload the results hold (read-<bs>-qd4, write-<bs>-qd4). Left: CPU time per MiB moved,
stacked into fio, the daemon, the NBD server and the rest (medians; tick: the total's median,
whiskers min-max). Middle: bytes of request data that entered the daemon's memory per byte
moved (user_bytes_per_io / block size: 1 when the daemon copies every byte in, 0 when the data
goes from the kernel's pages to the socket without entering user space). Right: bandwidth.
Writes DIR/forward.{png,pdf}.
"""

import re
import sys

from plots import _reproducible  # noqa: E402,F401
import matplotlib.pyplot as plt  # noqa: E402
from plots import _results as R  # noqa: E402

PROG = "plots/forward.py"
BACKEND = "forward"
NAME = re.compile(r"^(read|write)-(\d+[km])-qd4$")
PARTS = (("cpu_fio_us_per_io", "fio", 1.0),
         ("cpu_daemon_us_per_io", "daemon", 0.7),
         ("cpu_server_us_per_io", "NBD server", 0.45),
         ("cpu_other_us_per_io", "rest", 0.2))
MIB = 1 << 20


def label(w, bs):
    rw = w.split("-", 1)[0]
    return f"{rw}\n{bs // 1024} KiB" if bs < MIB else f"{rw}\n{bs // MIB} MiB"


def main():
    res, out = R.main_args(PROG, __doc__)
    rows = [r for r in res.rows() if r["backend"] == BACKEND and NAME.match(r["workload"])]
    if not rows:
        R.skip(PROG, "no sequential rows on the forward backend (make sweep's second run)")
    bs = {r["workload"]: r["bs_bytes"] for r in rows}
    workloads = sorted(bs, key=lambda w: (w.split("-")[0] != "read", bs[w]))
    transports = sorted({r["transport"] for r in rows}, key=R.order_key)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8))
    width = 0.8 / len(transports)
    used = []
    top = 1.0
    for k, t in enumerate(transports):
        colour, _ = R.style(t)
        for i, w in enumerate(workloads):
            row = res.row(t, BACKEND, w)
            if not row or not row.get("reps"):
                continue
            used.append(row)
            x = i - 0.4 + width * (k + 0.5)
            per_mib = MIB / bs[w]
            bottom = 0.0
            for key, _, alpha in PARTS:
                v = row.get(f"{key}_median")
                if v:
                    axes[0].bar(x, v * per_mib / 1000, width, bottom=bottom, color=colour,
                                alpha=alpha, edgecolor="white", lw=0.4)
                    bottom += v * per_mib / 1000
            total, (lo, hi) = R.err(row, "cpu_us_per_mib", 1e-3)
            if total is not None:
                axes[0].errorbar([x], [total], yerr=[[lo], [hi]], fmt="_", color="black",
                                 ms=8, capsize=1.5, lw=0.7)
            ub = row.get("user_bytes_per_io_median")
            if ub is not None:
                axes[1].bar(x, ub / bs[w], width, color=colour)
                top = max(top, ub / bs[w])
            med, (lo, hi) = R.err(row, "bw_mibps")
            if med is not None:
                axes[2].bar(x, med, width, color=colour, yerr=[[lo], [hi]], capsize=1.5,
                            error_kw={"elinewidth": 0.7})
    ticks = [label(w, bs[w]) for w in workloads]
    for ax in axes:
        ax.set_xticks(range(len(workloads)), ticks, fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("CPU ms per MiB moved")
    axes[0].set_title("CPU per byte", fontsize=10)
    from matplotlib.patches import Patch
    R.parts_legend(axes[0], PARTS)
    axes[1].set_ylabel("bytes into the daemon per byte moved")
    axes[1].set_ylim(0, top * 1.3)
    axes[1].set_title("data through user space", fontsize=10)
    axes[1].legend(handles=[Patch(facecolor=R.style(t)[0], label=t) for t in transports],
                   fontsize=8, loc="upper center", ncol=len(transports))
    axes[2].set_ylabel("MiB/s")
    axes[2].set_title("bandwidth", fontsize=10)
    R.finish(fig, res, used, out, "forward",
             "Figure 6: forwarding to an NBD server (backend forward, sequential, QD4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
