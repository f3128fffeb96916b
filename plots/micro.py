#!/usr/bin/python3
"""The figure of the primitives: microbenchmarks from make micro (docs/micro.md).

  python3 -m plots.micro [INPUT] [--out DIR]

INPUT is a results/micro JSON file, a folder of them, or a results directory holding micro/
(default: results/reference, whose micro/ has the runs behind the paper; `make micro` writes
results/micro/); from a folder the newest run of each platform (host, vm) is drawn, side by
side. Writes DIR/micro.png and
DIR/micro.pdf (default DIR: paper/figures), stamped with each run's id, platform, accelerator,
kernel and Google Benchmark version. Exits 77 when there is no input (make figures skips it).
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)

from plots import _reproducible  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from micro.microresult import MicroError, newest_per_platform, results_in  # noqa: E402

# The data primitives drawn as bandwidth against I/O size, per panel: (family prefix, label).
COPY_PANEL = [
    ("memcpy", "memcpy"),
    ("pipe/write+read", "pipe write+read"),
    ("pipe/vmsplice+read", "pipe vmsplice+read"),
    ("file/pwrite:tmpfs", "pwrite tmpfs"),
    ("file/vmsplice+splice:tmpfs", "vmsplice+splice tmpfs"),
    ("file/pwrite:disk", "pwrite disk"),
    ("file/vmsplice+splice:disk", "vmsplice+splice disk"),
]
SOCKET_PANEL = [
    ("socket/write:unix", "write UNIX"),
    ("socket/vmsplice+splice:unix", "vmsplice+splice UNIX"),
    ("socket/write:tcp", "write TCP"),
    ("socket/vmsplice+splice:tcp", "vmsplice+splice TCP"),
]
# Primitives with one size, drawn as ns per op.
PER_OP_GROUPS = ("wakeup/", "uring/", "file/pread:", "codec/")
STYLE = {"host": "-", "vm": "--"}


def series(result, family):
    """[(bytes, GB/s)] of a data primitive's sizes, from the counters."""
    pts = []
    for name, row in result["rows"].items():
        if name.rsplit("/", 1)[0] == family and row["ns_per_op"] and row["bytes"] > 0:
            pts.append((row["bytes"], row["bytes"] / row["ns_per_op"]))
    return sorted(pts)


def size_label(b):
    return f"{int(b) // 1024} KiB" if b < 1 << 20 else f"{int(b) // (1 << 20)} MiB"


def bandwidth_panel(ax, runs, panel, title):
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    sizes = set()
    for i, (family, label) in enumerate(panel):
        for platform, res in runs.items():
            pts = series(res, family)
            if not pts:
                continue
            sizes.update(p[0] for p in pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], STYLE.get(platform, ":"),
                    marker="o", ms=3, color=colors[i % len(colors)],
                    label=f"{label} ({platform})" if len(runs) > 1 else label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted(sizes)
    ax.set_xticks(ticks, [size_label(t) for t in ticks])
    ax.set_xlabel("bytes per operation")
    ax.set_ylabel("GB/s (1e9 bytes/s, log)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=6.5, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)


def per_op_panel(ax, runs):
    names = []
    for res in runs.values():
        for name, row in res["rows"].items():
            if name.startswith(PER_OP_GROUPS) and row["ns_per_op"] and name not in names:
                names.append(name)
    names.sort(key=lambda n: (PER_OP_GROUPS.index(next(g for g in PER_OP_GROUPS
                                                        if n.startswith(g))), n))
    height = 0.8 / max(len(runs), 1)
    for k, (platform, res) in enumerate(runs.items()):
        ys, xs, errs = [], [], [[], []]
        for i, n in enumerate(names):
            row = res["rows"].get(n)
            if not row or not row["ns_per_op"]:
                continue
            ys.append(i + k * height)
            xs.append(row["ns_per_op"])
            errs[0].append(row["ns_per_op"] - row["ns_min"])
            errs[1].append(row["ns_max"] - row["ns_per_op"])
        ax.barh(ys, xs, height=height, xerr=errs, label=platform, alpha=0.85,
                error_kw={"elinewidth": 0.6, "capsize": 1.5})
    ax.set_yticks([i + height * (len(runs) - 1) / 2 for i in range(len(names))], names,
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ns per operation (median of the repetitions, bars: min-max; log)")
    ax.set_title("per-operation cost: wake-up round trips, io_uring, descriptor handling",
                 fontsize=10)
    ax.grid(True, axis="x", which="major", alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=7)


def stamp(res):
    c = res["context"]
    return (f"{c.get('platform', '?')}: run {c.get('run_id', '?')}, accelerator "
            f"{c.get('accelerator', '?')}, kernel {c.get('kernel', '?').split(' ')[0]}, "
            f"{c.get('cpu_model', '?')}, {c.get('num_cpus', '?')} CPUs, "
            f"{c.get('benchmark_library', 'Google Benchmark')}, "
            f"commit {c.get('git_commit', '?')[:12]}")


def main():
    ap = argparse.ArgumentParser(prog="plots/micro.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", nargs="?", default=os.path.join(TOP, "results", "reference"),
                    help="a results/micro JSON file or folder, or a results directory with "
                         "micro/ (default results/reference)")
    ap.add_argument("--out", default=os.path.join(TOP, "paper", "figures"),
                    help="output folder (default paper/figures)")
    a = ap.parse_args()
    if os.path.isdir(os.path.join(a.input, "micro")):
        a.input = os.path.join(a.input, "micro")
    if not os.path.exists(a.input):
        print(f"plots/micro.py: {a.input} does not exist: run 'make micro' first; skipped")
        return _reproducible.EXIT_NO_INPUT
    try:
        found = results_in(a.input)
    except MicroError as e:
        sys.exit(f"plots/micro.py: {e}")
    if not found:
        print(f"plots/micro.py: no make micro results in {a.input}: run 'make micro'; skipped")
        return _reproducible.EXIT_NO_INPUT
    newest = newest_per_platform(found)
    runs = {p: newest[p] for p in sorted(newest, key=lambda p: (p != "host", p))}

    fig = plt.figure(figsize=(11, 10))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.3, 1])
    bandwidth_panel(fig.add_subplot(grid[0, 0]), runs, COPY_PANEL, "copies, pipes and files")
    bandwidth_panel(fig.add_subplot(grid[0, 1]), runs, SOCKET_PANEL,
                    "into a socket (a reader thread drains it)")
    per_op_panel(fig.add_subplot(grid[1, :]), runs)
    fig.suptitle("userblk: microbenchmarks of the primitives" +
                 (" (solid: host, dashed: VM)" if len(runs) > 1 else ""), fontsize=12)
    fig.text(0.01, 0.005, "\n".join(stamp(r) for r in runs.values()), fontsize=6.5,
             va="bottom", ha="left", family="monospace")
    fig.tight_layout(rect=(0, 0.015 + 0.013 * len(runs), 1, 0.97))
    for path in _reproducible.save(fig, a.out, "micro"):
        print(f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
