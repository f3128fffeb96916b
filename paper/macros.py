#!/usr/bin/python3
"""The numbers the paper quotes, computed from a results directory, as LaTeX macros.

  python3 -m paper.macros [RESULTS] --write paper/numbers.tex   write the macros file
  python3 -m paper.macros [RESULTS] --check paper/numbers.tex   check it and the text (make test)
  python3 -m paper.macros [RESULTS] --list                      every key and its value

RESULTS defaults to results/reference. The text never writes a measured number: it writes
\\N{key} (defined in paper.tex), and numbers.tex defines every key. --check fails when
numbers.tex differs from what RESULTS give now (a new reference run: rewrite it with --write
and reread every sentence that quotes a changed key; the winners' names are keys too), or when
the text uses a key the results do not give. It is the script the issue asks for: a number
quoted in the text can only come from the committed results.

Keys: set.* (settings and platform), micro.* (primitives), and per (metric, workload,
transport) lat./p99./iops./cpu./bw./fwd.*; win.<question>.* names the winner among
userblk.ko's transports and its ratios over the nbd baseline and ublk (a ratio above 1 means
the winner is better by that factor).
"""

import argparse
import difflib
import math
import os
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
from plots import _results as R

TEXT = [os.path.join(HERE, "paper.tex")]
SECTIONS = os.path.join(HERE, "sections")
USE = re.compile(r"\\N\{([^{}]+)\}")
MIB = 1 << 20

# What the text says in words about the numbers, checked with them: (key, operator, bound,
# the claim). A new reference run that breaks one fails --check until the text is reread.
ORDER_QD1 = ("ring", "ublk", "copy", "splice", "pipe")
CLAIMS = [
    ("win.qdonelat", "==", "ring", "ring has the lowest QD1 latency"),
    ("lat.rr4kqd1.ring.max", "<", "@lat.rr4kqd1.ublk.min",
     "the QD1 read latencies of ring and ublk do not overlap"),
    ("lat.rr4kqd1.loop", "<", "@lat.rr4kqd1.ring", "loop is faster at QD1 than any daemon"),
] + [
    (f"{m}.{w}.{a}", "<", f"@{m}.{w}.{b}", f"the QD1 order is {', '.join(ORDER_QD1)}")
    for m, w in (("lat", "rr4kqd1"), ("lat", "rw4kqd1"), ("p99", "rr4kqd1"))
    for a, b in zip(ORDER_QD1, ORDER_QD1[1:])
] + [
    ("win.iops", "==", "ring", "ring reaches the most IOPS at the highest depth"),
    ("win.iops.vsublk", ">", 1.0, "ring is above ublk at the highest depth"),
    ("iops.rr4kqd128.ring.min", "<", "@iops.rr4kqd128.ublk.max",
     "ring and ublk overlap at depth 128"),
    ("iops.rr4kqd32.ring.min", "<", "@iops.rr4kqd32.ublk.max", "and at depth 32"),
    ("iops.rr4kqd128.copy", "<", "@iops.rr4kqd128.null_blk*0.667",
     "copy stays below two thirds of null_blk"),
    ("iops.rr4kqd128.splice", "<", "@iops.rr4kqd128.null_blk*0.667", "so does splice"),
    ("iops.rr4kqd128.pipe", "<", "@iops.rr4kqd128.null_blk*0.667", "so does pipe"),
    ("iops.rr4kqd16.ring.min", "<", "@iops.rr4kqd16.ring*0.6", "a ring repetition fell"),
    ("iops.rr4kqd4.ublk.min", "<", "@iops.rr4kqd4.ublk*0.6", "a ublk repetition fell"),
    ("iops.rr4kqd128.copy.min", "<", "@iops.rr4kqd128.copy*0.6", "a copy repetition fell"),
    ("win.cpuqdone", "==", "ring", "ring is the cheapest at QD1"),
    ("win.cpu", "==", "ring", "ring is the cheapest at QD32"),
    ("cpu.rr4kqd32.ring", ">", "@cpu.rr4kqd32.ublk.min", "ublk is within ring's spread"),
    ("bw.w1mqd4.ring", ">", "@bw.w1mqd4.splice*4", "the write gap is wide"),
    ("bw.w1mqd4.ublk", ">", "@bw.w1mqd4.splice*4", "the write gap is wide"),
    ("bw.r1mqd4.ring", ">", "@bw.r1mqd4.splice*1.5", "the read gap is narrower"),
    ("bw.r1mqd4.splice", ">", "@bw.r1mqd4.copy", "splice before copy on reads"),
    ("bw.w1mqd4.splice", ">", "@bw.w1mqd4.copy", "splice before copy on writes"),
    ("cpud.rr4kqd32.ring", "<", "@cpud.rr4kqd32.copy", "the daemon share separates them"),
    # forwarding
    ("win.fwdw1mqd4", "==", "pipe", "pipe is the cheapest per byte written"),
    ("win.fwdr1mqd4", "==", "pipe", "pipe is the cheapest per byte read"),
    ("win.fwdw1mqd4.vsublk", ">", 1.0, "pipe spends less than ublk"),
] + [
    (f"fwd.user.w1mqd4.{t}", "<", 0.01, f"no data enters {t}'s daemon") for t in ("pipe", "splice")
] + [
    (f"fwd.user.w1mqd4.{t}", ">", 0.99, f"all data enters {t}'s daemon")
    for t in ("copy", "ublk", "nbd")
] + [
    (f"fwd.daemon.r1mqd4.{a}", "<", f"@fwd.daemon.r1mqd4.{b}", "not copying saves daemon CPU")
    for a in ("pipe", "splice") for b in ("copy", "ublk")
] + [
    ("fwd.cpumib.w1mqd4.pipe.max", "<", f"@fwd.cpumib.w1mqd4.{t}.min",
     "pipe's writes are outside every other transport's range")
    for t in ("splice", "copy", "ublk", "nbd")
] + [
    ("fwd.cpumib.w1mqd4.splice.min", "<", "@fwd.cpumib.w1mqd4.ublk.max",
     "splice's writes are not outside ublk's range"),
    ("fwd.daemon.w1mqd4.splice", ">", "@fwd.daemon.w1mqd4.pipe", "splice's daemon spends more"),
    ("fwd.cpumib.r1mqd4.pipe.min", "<", "@fwd.cpumib.r1mqd4.splice.max", "reads overlap"),
    ("fwd.cpumib.r1mqd4.splice.min", "<", "@fwd.cpumib.r1mqd4.pipe.max", "reads overlap"),
] + [
    (f"fwd.server.{w}.{t}", ">", f"@fwd.daemon.{w}.{t}", "the server costs more than the daemon")
    for w in ("r1mqd4", "w1mqd4") for t in ("pipe", "splice")
]

LAT_WORKLOADS = ("randread-4k-qd1", "randwrite-4k-qd1")
CPU_WORKLOADS = ("randread-4k-qd1", "randread-4k-qd32", "randwrite-4k-qd1")
FORWARD = "forward"


def fmt(v, digits=3):
    """Three significant digits, no exponent: 0.0123, 1.23, 12.3, 123, 1230, 41400."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    decimals = digits - 1 - mag
    if decimals >= 0:
        return f"{v:.{decimals}f}"
    return f"{round(v, decimals):.0f}"


def text(v):
    return None if v is None else str(v)


def kilo(v):
    return None if v is None else fmt(v / 1000.0) + "k"


def short(workload):
    """randread-4k-qd1 -> rr4kqd1: keys stay readable without dashes."""
    return (workload.replace("randread", "rr").replace("randwrite", "rw")
            .replace("read", "r").replace("write", "w").replace("-", ""))


def p99_total(row):
    got = R.over_reps(row, lambda fio: R.percentile_of(fio, 99.0))
    return got[0] if got else None


def userblk_transports(res, workload, backends=R.MAIN_BACKENDS):
    return [t for t in res.transports([workload], backends)
            if (res.main_row(t, workload, backends) or {}).get("kind") == "userblk"]


def winner(res, workload, metric, lower_is_better, backends=R.MAIN_BACKENDS):
    """(transport, value) of the best userblk.ko transport by a row metric's median."""
    best = None
    for t in userblk_transports(res, workload, backends):
        row = res.main_row(t, workload, backends)
        v = row.get(f"{metric}_median")
        if v is None:
            continue
        if best is None or (v < best[1] if lower_is_better else v > best[1]):
            best = (t, v)
    return best


def compute(res):
    n = {}

    def put(key, value):
        if value is not None:
            n[key] = value

    def spread(key, row, metric, form):
        """key, key.min and key.max: a row metric's median and range over the repetitions."""
        put(key, form(row.get(f"{metric}_median")))
        put(f"{key}.min", form(row.get(f"{metric}_min")))
        put(f"{key}.max", form(row.get(f"{metric}_max")))

    # settings and platform, from the run of the paper set (else the first run)
    main = res.main
    if main:
        s = main.plan.get("settings") or {}
        p = main.meta.get("platform") or {}
        h = main.meta.get("host") or {}
        put("set.reps", text(s.get("reps")))
        put("set.runtime", f"{s['runtime_s']:g}" if s.get("runtime_s") is not None else None)
        put("set.ramp", f"{s['ramp_s']:g}" if s.get("ramp_s") is not None else None)
        put("set.queues", text(s.get("queues") or p.get("smp")))
        put("set.depth", text(s.get("depth")))
        if s.get("size_bytes"):
            put("set.size", f"{s['size_bytes'] // MIB}~MiB")
        put("set.cells", str(len(main.plan.get("cells") or [])))
        put("set.vcpus", text(p.get("smp") or p.get("ncpu")))
        put("set.mem", text(p.get("mem_mb")))
        put("set.kernel", p.get("kernel"))
        put("set.fio", main.summary.get("fio_version"))
        put("set.qemu", p.get("qemu"))
        put("set.accel", p.get("accel"))
        put("set.hostkernel", h.get("kernel"))
        put("set.hostcpu", h.get("cpu_model"))
        put("run.main", main.id)
    fwd_run = next((r for r in res.runs if (r.plan.get("settings") or {}).get("workload_set")
                    == "paper-forward"), None)
    if fwd_run:
        put("run.forward", fwd_run.id)
        put("set.fwdcells", str(len(fwd_run.plan.get("cells") or [])))

    # per transport, main backends
    for w in LAT_WORKLOADS:
        for t in res.transports([w]):
            row = res.main_row(t, w)
            spread(f"lat.{short(w)}.{t}", row, "lat_total_mean_us", fmt)
            put(f"p99.{short(w)}.{t}", fmt(p99_total(row)))
    for w in sorted({r["workload"] for r in res.rows()
                     if re.match(r"^randread-4k-qd\d+$", r["workload"])}):
        for t in res.transports([w]):
            row = res.main_row(t, w)
            spread(f"iops.{short(w)}.{t}", row, "iops", kilo)
    for w in CPU_WORKLOADS:
        for t in res.transports([w]):
            row = res.main_row(t, w)
            spread(f"cpu.{short(w)}.{t}", row, "cpu_us_per_io", fmt)
            put(f"cpud.{short(w)}.{t}", fmt(row.get("cpu_daemon_us_per_io_median")))
    for w in sorted({r["workload"] for r in res.rows()
                     if re.match(r"^(read|write)-\d+[km]-qd4$", r["workload"])}):
        for t in res.transports([w]):
            put(f"bw.{short(w)}.{t}", fmt(res.main_row(t, w).get("bw_mibps_median")))

    # the forwarding case
    for r in res.rows():
        if r["backend"] != FORWARD:
            continue
        t, w = r["transport"], short(r["workload"])
        spread(f"fwd.cpumib.{w}.{t}", r, "cpu_us_per_mib",
               lambda v: fmt(v / 1000.0) if v is not None else None)
        for part in ("daemon", "server"):  # ms per MiB moved
            v = r.get(f"cpu_{part}_us_per_io_median")
            if v is not None and r.get("bs_bytes"):
                put(f"fwd.{part}.{w}.{t}", fmt(v * MIB / r["bs_bytes"] / 1000.0))
        if r.get("user_bytes_per_io_median") is not None and r.get("bs_bytes"):
            put(f"fwd.user.{w}.{t}", fmt(r["user_bytes_per_io_median"] / r["bs_bytes"]))
        put(f"fwd.bw.{w}.{t}", fmt(r.get("bw_mibps_median")))
        put(f"fwd.lat.{w}.{t}", fmt(r.get("lat_total_mean_us_median")))

    # the winners among userblk.ko's transports, against nbd and ublk
    def against(q, workload, best, value_of, lower_is_better, backends=R.MAIN_BACKENDS):
        if not best:
            return
        t, v = best
        put(f"win.{q}", t)
        put(f"win.{q}.value", fmt(v))
        for base in ("nbd", "ublk"):
            row = res.main_row(base, workload, backends)
            bv = value_of(row) if row else None
            if bv:
                put(f"win.{q}.vs{base}", fmt(bv / v if lower_is_better else v / bv))

    med = (lambda key: lambda row: row.get(f"{key}_median"))
    qd1 = "randread-4k-qd1"
    against("qdonelat", qd1, winner(res, qd1, "lat_total_mean_us", True),
            med("lat_total_mean_us"), True)
    depths = sorted(int(m.group(1)) for r in res.rows()
                    for m in [re.match(r"^randread-4k-qd(\d+)$", r["workload"])] if m)
    if depths:
        deep = f"randread-4k-qd{depths[-1]}"
        put("set.maxqd", str(depths[-1]))
        best = winner(res, deep, "iops", False)
        against("iops", deep, best, med("iops"), False)
        if best:
            put("win.iops.kiops", kilo(best[1]))
    qd32 = "randread-4k-qd32"
    against("cpu", qd32, winner(res, qd32, "cpu_us_per_io", True), med("cpu_us_per_io"), True)
    against("cpuqdone", qd1, winner(res, qd1, "cpu_us_per_io", True), med("cpu_us_per_io"),
            True)
    for w in ("write-1m-qd4", "read-1m-qd4"):
        best = winner(res, w, "cpu_us_per_mib", True, backends=(FORWARD,))
        if best:
            best = (best[0], best[1] / 1000.0)
        against(f"fwd{short(w)}", w, best,
                lambda row: (row.get("cpu_us_per_mib_median") or 0) / 1000.0 or None, True,
                backends=(FORWARD,))
        row = res.row("copy", FORWARD, w)
        if best and row and row.get("cpu_us_per_mib_median"):
            put(f"win.fwd{short(w)}.vscopy", fmt(row["cpu_us_per_mib_median"] / 1000.0
                                                 / best[1]))

    # the primitives: VM against host
    micro_numbers(res.path, put)
    return n


def micro_numbers(path, put):
    from micro import microresult
    folder = os.path.join(path, "micro")
    if not os.path.isdir(folder):
        return
    newest = microresult.newest_per_platform(microresult.results_in(folder))
    host, vm = newest.get("host"), newest.get("vm")
    if not host or not vm:
        return

    def ratio(name):
        h = host["rows"].get(name, {}).get("ns_per_op")
        g = vm["rows"].get(name, {}).get("ns_per_op")
        return g / h if h and g else None

    put("micro.memcpy.4k.ratio", fmt(ratio("memcpy/4096")))
    put("micro.memcpy.1m.ratio", fmt(ratio("memcpy/1048576")))
    # the wake-ups that sleep (not the busy-polled ring handoff, which never sleeps)
    wake = [r for r in (ratio(n) for n in host["rows"]
                        if n.startswith("wakeup/") and "busy" not in n) if r]
    if wake:
        put("micro.wakeup.ratio.min", fmt(min(wake), 2))
        put("micro.wakeup.ratio.max", fmt(max(wake), 2))
        put("micro.wakeup.ratio.median", fmt(statistics.median(wake), 2))


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "%": r"\%",
                 "&": r"\&", "#": r"\#", "$": r"\$", "^": r"\^{}", "~": r"\~{}"}


def escape(v):
    """A value as LaTeX text; set.size's "~" (a tie) is the one markup a value may carry."""
    v = str(v)
    if v.endswith("~MiB") and v[:-4].isdigit():
        return v
    return "".join(LATEX_SPECIAL.get(c, c) for c in v)


def number(v):
    """A formatted value as a float ("41.4k" -> 41400), or None for a name."""
    try:
        return float(v[:-1]) * 1000 if v.endswith("k") else float(v)
    except (ValueError, AttributeError):
        return None


def broken_claims(numbers):
    """The claims that do not hold. A bound is a number, "@key" or "@key*factor" (another
    number, times a factor), or a name (with "==")."""
    out = []
    for key, op, bound, claim in CLAIMS:
        v = numbers.get(key)
        if isinstance(bound, str) and not bound.startswith("@"):
            ok = op == "==" and v == bound
        else:
            if isinstance(bound, str):  # "@key" or "@key*factor"
                ref, _, factor = bound[1:].partition("*")
                b = number(numbers.get(ref))
                b = b * float(factor) if b is not None and factor else b
            else:
                b = bound
            x = number(v) if v is not None else None
            ok = x is not None and b is not None and (x > b if op == ">" else x < b)
        if not ok:
            out.append(f"{key} = {v}, but the text says {claim} ({key} {op} {bound})")
    return out


def render(numbers, results):
    out = ["% Generated by paper/macros.py from " + results + ": do not edit.",
           "% Every measured number of the text is one of these keys (\\N{key} in paper.tex).",
           "% paper/macros.py --check, run by make test, keeps it true to the results."]
    for k in sorted(numbers):
        v = escape(numbers[k])
        out.append(f"\\expandafter\\def\\csname ubn@{k}\\endcsname{{{v}}}")
    return "\n".join(out) + "\n"


def used_keys():
    files = list(TEXT)
    if os.path.isdir(SECTIONS):
        files += [os.path.join(SECTIONS, f) for f in sorted(os.listdir(SECTIONS))
                  if f.endswith(".tex")]
    used = {}
    for f in files:
        if not os.path.exists(f):
            continue
        with open(f) as fh:
            for i, line in enumerate(fh, 1):
                code = re.split(r"(?<!\\)%", line, maxsplit=1)[0]
                for m in USE.finditer(code):
                    used.setdefault(m.group(1), f"{os.path.relpath(f, TOP)}:{i}")
    return used


def main():
    ap = argparse.ArgumentParser(prog="paper/macros.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", default=R.DEFAULT_RESULTS)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", metavar="FILE")
    g.add_argument("--check", metavar="FILE")
    g.add_argument("--list", action="store_true")
    a = ap.parse_args()
    try:
        res = R.Results(a.results)
    except R.ResultsError as e:
        sys.exit(f"paper/macros.py: {e}")
    if not res.runs:
        sys.exit(f"paper/macros.py: no run of make bench in {a.results}")
    numbers = compute(res)
    rel = os.path.relpath(os.path.abspath(a.results), TOP)
    text = render(numbers, rel)
    if a.list:
        for k in sorted(numbers):
            print(f"{k} = {numbers[k]}")
        return 0
    missing = {k: where for k, where in used_keys().items() if k not in numbers}
    broken = broken_claims(numbers)
    if a.write:
        with open(a.write + ".tmp", "w") as f:
            f.write(text)
        os.replace(a.write + ".tmp", a.write)
        print(f"wrote {os.path.relpath(a.write)}: {len(numbers)} numbers from {rel}")
    else:
        try:
            with open(a.check) as f:
                have = f.read()
        except OSError as e:
            sys.exit(f"paper/macros.py: {e}")
        if have != text:
            diff = "".join(difflib.unified_diff(have.splitlines(True), text.splitlines(True),
                                                a.check, f"from {rel}", n=0))
            print(f"paper/macros.py: {a.check} does not match {rel}:\n{diff}"
                  f"rewrite it with 'paper/macros.py --write {a.check}' and reread the "
                  "sentences that quote the changed keys", file=sys.stderr)
            return 1
        print(f"{os.path.relpath(a.check)}: the {len(numbers)} numbers match {rel}")
    for k, where in sorted(missing.items(), key=lambda kv: kv[1]):
        print(f"paper/macros.py: {where}: \\N{{{k}}} is not a number of {rel}", file=sys.stderr)
    for b in broken:
        print(f"paper/macros.py: {b}: reword it", file=sys.stderr)
    return 1 if missing or broken else 0


if __name__ == "__main__":
    sys.exit(main())
