"""The plain-text table and the PNG figure of a run's summary."""


from . import results


HOST_BUSY_CORES = 0.25   # host load (other processes or steal) that makes a row suspect


def _si(v, digits=1):
    if v is None:
        return "-"
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.{digits}f}{suffix}"
    return f"{v:.0f}"


def _f(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def _ratio(v):
    return "-" if v is None else f"{v:.2f}x"


def header_line(meta, summary):
    plat = summary.get("platform") or "?"
    accel = summary.get("accel")
    guest = (meta or {}).get("platform", {})
    parts = [f"run {summary.get('run_id')}", f"{plat}/{accel}" if accel else plat]
    if guest.get("kernel"):
        parts.append(f"kernel {guest['kernel']}")
    fio = (meta or {}).get("tools", {}).get("fio_version")
    if fio:
        parts.append(fio)
    settings = (meta or {}).get("settings") or {}
    if settings.get("reps"):
        parts.append(f"{settings['reps']} reps")
    return "  ".join(parts)


BIG_BLOCK = 65536        # blocks this large are about bandwidth: MiB/s and CPU per MiB


def _nonzero(rows, key):
    return any((r.get(key) or 0) > 0 for r in rows if r["status"] in ("ok", "partial"))


def polls(row):
    """Who spins in a row's cell, for the table's "polls" column: "fio" for polled I/O (a
    -hipri workload: fio spins in blk-mq's poll), "daemon" for a transport variant whose daemon
    spins (ring's --spin-us or --poll-us), "fio+daemon" for both, "" for neither. A polled
    row's latency is bought with busy cores: the table shows them beside it."""
    workload = row.get("workload") or ""
    options = (row.get("transport") or "").split(":")[1:]
    fio = workload.endswith("-hipri")
    daemon = any(o.split("=", 1)[0] in ("spin-us", "poll-us") and not o.endswith("=0")
                 for o in options)
    return "+".join(w for w, on in (("fio", fio), ("daemon", daemon)) if on)


def table(rows, meta=None, summary=None):
    """One line per (transport, backend, workload): medians, IOPS spread, ratio to null_blk.

    Columns that would be empty for every row are left out: the NBD server's share of the
    CPU split (only where a backend needs a server the harness starts, `forward`), CPU per
    MiB (only with blocks of 64 KiB and more), bytes the pipe adapter copied (only where it
    copied any), bytes userblk.ko copied of the request data into or out of the daemon's
    memory + kernel pages (only where some row was measured with those counters), and bytes it
    lent instead (only where some row lent any)."""
    server = any(r.get("cpu_server_us_per_io_median") is not None for r in rows)
    per_mib = any((r.get("bs_bytes") or 0) >= BIG_BLOCK for r in rows)
    adapter = _nonzero(rows, "adapter_bytes_per_io_median")
    # userblk.ko's copies of the request data (only where some row has the counters).
    kcopy = any(r.get("kernel_copy_user_bytes_per_io_median") is not None for r in rows)
    parts = ("fio", "daemon", "server", "other") if server else ("fio", "daemon", "other")
    head = ["workload", "transport", "backend", "IOPS", "(min-max)", "MiB/s", "vs null_blk",
            "lat us", "clat us", "clat p99", "CPU us/IO", "+".join(parts)]
    head += ["CPU us/MiB"] if per_mib else []
    head += ["ctxsw/IO", "user B/IO"] + (["adapter B/IO"] if adapter else [])
    head += ["kcopy user+kernel B/IO"] if kcopy else []
    lent = _nonzero(rows, "kernel_lent_bytes_per_io_median")
    head += ["lent B/IO"] if lent else []
    # Polled rows: who spins, the cores that costs, and the daemon's syscalls per request.
    polled = any(polls(r) for r in rows)
    head += ["polls", "busy cores", "daemon sys/req"] if polled else []
    lines = []
    for r in rows:
        if r["status"] in ("ok", "partial"):
            cells = [
                _si(r["iops_median"]),
                f"({_si(r['iops_min'])}-{_si(r['iops_max'])})",
                _f(r["bw_mibps_median"]),
                _ratio(r.get("iops_vs_null_blk")),
                _f(r.get("lat_total_mean_us_median")),
                _f(r["lat_mean_us_median"]),
                _f(r["lat_p99_us_median"]),
                _f(r["cpu_us_per_io_median"]),
                "+".join(_f(r.get(f"cpu_{k}_us_per_io_median")) for k in parts),
            ]
            if per_mib:
                big = (r.get("bs_bytes") or 0) >= BIG_BLOCK
                cells.append(_f(r.get("cpu_us_per_mib_median"), 0) if big else "-")
            cells += [_f(r["ctxsw_per_io_median"], 2), _f(r["user_bytes_per_io_median"], 0)]
            if adapter:
                cells.append(_f(r.get("adapter_bytes_per_io_median"), 0))
            if kcopy:
                user = r.get("kernel_copy_user_bytes_per_io_median")
                kern = r.get("kernel_copy_kernel_bytes_per_io_median")
                cells.append("-" if user is None and kern is None
                             else f"{_f(user, 0)}+{_f(kern, 0)}")
            if lent:
                cells.append(_f(r.get("kernel_lent_bytes_per_io_median"), 0))
            if polled:
                cells += [polls(r) or "-", _f(r.get("cpu_busy_cores_median"), 2),
                          _f(r.get("daemon_syscalls_per_request_median"), 2)]
            if r["status"] == "partial":
                cells.append(f"[{r['reps']}/{r['reps_planned']} reps ok]")
        else:
            reason = (r.get("reason") or "").replace("\n", " ")
            limit = 200 if "DATA VERIFICATION FAILED" in reason else 110
            if len(reason) > limit:
                reason = reason[:limit - 3] + "..."
            cells = [f"{r['status'].upper()}: {reason}"]
        lines.append([r["workload"], r["transport"], r["backend"]] + cells)
    widths = [len(h) for h in head]
    for ln in lines:
        if len(ln) >= len(head):
            widths = [max(w, len(c)) for w, c in zip(widths, ln)]
    right = set(range(3, len(head)))

    def fmt(cols):
        out = []
        for i, c in enumerate(cols):
            if i >= len(head) or (len(cols) < len(head) and i == len(cols) - 1):
                out.append(c)
            elif i in right:
                out.append(c.rjust(widths[i]))
            else:
                out.append(c.ljust(widths[i]))
        return "  ".join(out).rstrip()

    text = []
    if summary is not None:
        text.append(header_line(meta, summary))
        c = summary.get("cells", {})
        text.append(f"cells: {c.get('ok', 0)} ok, {c.get('failed', 0)} failed, "
                    f"{c.get('skipped', 0)} skipped, {c.get('missing', 0)} not run, "
                    f"of {c.get('planned', 0)}; medians over repetitions (IOPS also min-max)")
        text.append("lat: submission to completion (mean); clat: completion only (mean, p99); "
                    "CPU per I/O: every process over fio's measured window, split into "
                    + "+".join(parts)
                    + ("; CPU us/MiB: CPU per MiB moved, for blocks of 64 KiB and more"
                       if per_mib else "")
                    + "; user B/IO: request bytes through the daemon's memory per I/O"
                    + ("; adapter B/IO: bytes the backend's pipe adapter copied per I/O"
                       if adapter else ""))
    busy = [r for r in rows if (r.get("host_other_cores_max") or 0) > HOST_BUSY_CORES
            or (r.get("host_steal_cores_max") or 0) > HOST_BUSY_CORES]
    if busy:
        worst = max(max(r.get("host_other_cores_max") or 0, r.get("host_steal_cores_max") or 0)
                    for r in busy)
        text.append(f"warning: the host was busy during {len(busy)} of {len(rows)} rows: other "
                    f"host processes or steal took up to {worst:.2f} CPUs from the VM, so those "
                    "numbers are slow and spread (host_other_cores_*, host_steal_cores_* in "
                    "summary.csv); rerun on a quiet host")
    text.append(fmt(head))
    prev = None
    for ln in lines:
        if prev is not None and ln[0] != prev:
            text.append("")
        shown = list(ln)
        if ln[0] == prev:
            shown[0] = ""
        prev = ln[0]
        text.append(fmt(shown))
    return "\n".join(text) + "\n"


# --- figure --------------------------------------------------------------------------------

def figure(rows, path, stamp, ncols=4):
    """Small multiples, two panels per workload: IOPS (MiB/s for blocks of 64 KiB and more)
    with min-max bars and the ratio to null_blk above each bar, and CPU per I/O split into
    fio, daemon and the rest. Each panel has its own scale. Deterministic PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update({"font.size": 7})
    workloads, devices = [], []
    for r in rows:
        if r["workload"] not in workloads:
            workloads.append(r["workload"])
        dev = (r["transport"], r["backend"])
        if dev not in devices:
            devices.append(dev)
    by = {(r["transport"], r["backend"], r["workload"]): r for r in rows}
    labels = [d[0] if d[1] == results.NO_BACKEND else f"{d[0]}/{d[1]}" for d in devices]
    cmap = plt.get_cmap("tab10")
    colors = [cmap(j % 10) for j in range(len(devices))]

    n_w = max(len(workloads), 1)
    ncols = min(ncols, n_w)
    nrows = (n_w + ncols - 1) // ncols
    width = max(0.9 + 0.42 * len(devices), 2.6)
    fig, axes = plt.subplots(2 * nrows, ncols, figsize=(ncols * width, nrows * 4.4 + 0.6),
                             squeeze=False,
                             gridspec_kw={"height_ratios": [1.2, 1.0] * nrows})
    xs = list(range(len(devices)))
    for i in range(nrows * ncols):
        top, bottom = axes[2 * (i // ncols)][i % ncols], axes[2 * (i // ncols) + 1][i % ncols]
        if i >= len(workloads):
            top.axis("off")
            bottom.axis("off")
            continue
        w = workloads[i]
        rs = [by.get((d[0], d[1], w)) for d in devices]
        big = any(r and (r.get("bs_bytes") or 0) >= 65536 for r in rs)
        stem, unit = ("bw_mibps", "MiB/s") if big else ("iops", "IOPS")
        vals, lo, hi = [], [], []
        for r in rs:
            v = r.get(f"{stem}_median") if r else None
            vals.append(v or 0.0)
            lo.append((v - r[f"{stem}_min"]) if v is not None else 0.0)
            hi.append((r[f"{stem}_max"] - v) if v is not None else 0.0)
        top.bar(xs, vals, 0.7, yerr=[lo, hi], capsize=2, color=colors,
                error_kw={"elinewidth": 0.7})
        peak = max([v + h for v, h in zip(vals, hi)] + [1e-9])
        for x, r, v, h in zip(xs, rs, vals, hi):
            if r is None or r.get(f"{stem}_median") is None:
                top.text(x, peak * 0.02, r["status"] if r else "-", ha="center",
                         va="bottom", rotation=90, fontsize=6, color="grey")
            elif r.get("iops_vs_null_blk") is not None:
                top.text(x, v + h + peak * 0.01, f"{r['iops_vs_null_blk']:.2f}x",
                         ha="center", va="bottom", fontsize=6)
        top.set_ylim(0, peak * 1.15)
        top.set_title(w)
        top.set_ylabel(unit + " (median, min-max)")
        top.set_xticks(xs)
        top.set_xticklabels([])
        bottom_acc = [0.0] * len(devices)
        for part, hatch, alpha in (("fio", "", 1.0), ("daemon", "////", 0.7),
                                   ("server", "xxxx", 0.55), ("other", "....", 0.4)):
            part_vals = []
            for r in rs:
                v = r.get(f"cpu_{part}_us_per_io_median") if r else None
                part_vals.append(max(v, 0.0) if v is not None else 0.0)
            bottom.bar(xs, part_vals, 0.7, bottom=bottom_acc, color=colors, alpha=alpha,
                       hatch=hatch, edgecolor="white", linewidth=0.3)
            bottom_acc = [a + b for a, b in zip(bottom_acc, part_vals)]
        bottom.set_ylabel("CPU us per I/O")
        bottom.set_xticks(xs)
        bottom.set_xticklabels(labels, rotation=35, ha="right")
    server = any(r.get("cpu_server_us_per_io_median") is not None for r in rows)
    fig.suptitle(stamp + "\nbars: IOPS (MiB/s for large blocks), ratio to null_blk's IOPS above; "
                 "below: CPU per I/O of the whole system, fio (solid) + daemon (////) + "
                 + ("NBD server (xxxx) + " if server else "") + "rest (....)", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
