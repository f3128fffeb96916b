"""Publishing runs as the reference results: results/reference/ (docs/reproduce.md).

  harness/harness publish RUN [RUN ...] [--micro FILE]... [--to results/reference]

Copies each finished run into <to>/runs/<run-id>/, replacing every run there, so the reference
is exactly these runs; with --micro, the `make micro` results replace <to>/micro/ too (without
it, micro/ stays as it is). The files a reader and the figures need stay as they are
(meta.json, plan.json, summary.json, summary.csv, table.txt, every cell.json, each boot's
vm.json, guest.json, guest-info, cmd.sh, status); the raw files (fio.json, fio.log, daemon and
server logs, statistics snapshots, the guest's console log, host-load samples) are
gzip-compressed as NAME.gz with no name or time in the header, so the same run publishes to the
same bytes (with the same zlib); files already compressed (a run published before) are copied
as they are. Anything else (an initramfs left by an interrupted run, figure.png, which
`make figures` replaces) is left out.

Nothing is removed until everything is copied: the new tree is built beside <to> and moved in
at the end. A run that is not finished (no plan.json or meta.json, a current.json left by a
running benchmark, a row that is failed, partial or missing) is refused, as is a source inside
the tree being replaced, and a <to> that is neither empty nor a reference directory (its
README.md, runs/ and micro/, nothing else).
"""

import gzip
import json
import os
import shutil

PLAIN = {"meta.json", "plan.json", "summary.json", "summary.csv", "table.txt", "cell.json",
         "vm.json", "guest.json", "guest-info", "cmd.sh", "status"}
COMPRESSED_SUFFIXES = (".json", ".log")
SKIPPED = {"figure.png", "initramfs.cpio"}


class PublishError(Exception):
    pass


def _gzip(src, dst):
    with open(src, "rb") as f:
        data = f.read()
    with open(dst + ".gz", "wb") as raw:
        # mtime 0 and no file name: the bytes depend on the content alone
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as z:
            z.write(data)


def check_run(run):
    """(run id, problems) of a run directory."""
    try:
        with open(os.path.join(run, "summary.json")) as f:
            summary = json.load(f)
    except FileNotFoundError:
        raise PublishError(f"{run}: no summary.json: not a finished run of make bench "
                           "(harness/harness report RUN writes it for an interrupted one)")
    except ValueError as e:
        raise PublishError(f"{run}/summary.json does not parse: {e}")
    problems = [f"no {name}" for name in ("plan.json", "meta.json")
                if not os.path.exists(os.path.join(run, name))]
    if os.path.exists(os.path.join(run, "current.json")):
        problems.append("current.json is there: the benchmark may still be running")
    bad = {}
    for row in summary.get("rows", []):
        if row.get("status") not in ("ok", "skipped"):
            bad[row.get("status")] = bad.get(row.get("status"), 0) + 1
    problems += [f"{n} rows {status}" for status, n in sorted(bad.items(), key=str)]
    if not summary.get("rows"):
        problems.append("no rows")
    return summary.get("run_id") or os.path.basename(os.path.normpath(run)), problems


def copy_run(run, dst):
    copied = compressed = 0
    for root, dirs, files in os.walk(run):
        dirs.sort()
        rel = os.path.relpath(root, run)
        out = os.path.normpath(os.path.join(dst, rel))
        os.makedirs(out, exist_ok=True)
        for name in sorted(files):
            src = os.path.join(root, name)
            if name in SKIPPED or name.endswith(".tmp"):
                continue
            if name in PLAIN or name.endswith(".gz"):
                shutil.copyfile(src, os.path.join(out, name))
                copied += 1
            elif name.endswith(COMPRESSED_SUFFIXES):
                _gzip(src, os.path.join(out, name))
                compressed += 1
    return copied, compressed


def _inside(path, tree):
    path, tree = os.path.realpath(path), os.path.realpath(tree)
    return path == tree or path.startswith(tree + os.sep)


def publish(runs, micro, to, allow_incomplete=False, max_bytes=None):
    """Returns the lines to print; raises PublishError before touching <to> on any problem."""
    ids = []
    for run in runs:
        run_id, problems = check_run(run)
        if problems and not allow_incomplete:
            raise PublishError(f"{run}: " + "; ".join(problems) + ": finish it "
                               "(harness/bench --resume) or pass --allow-incomplete")
        if run_id in ids:
            raise PublishError(f"run {run_id} given twice")
        ids.append(run_id)
    for m in micro:
        if not (os.path.isfile(m) and m.endswith(".json")):
            raise PublishError(f"{m}: not a make micro result (results/micro/<run-id>.json)")
    for src in list(runs) + list(micro):
        if _inside(src, to):
            raise PublishError(f"{src} is inside {to}, which publishing replaces: copy it "
                               "out first")
    if os.path.isdir(to):
        have = set(os.listdir(to))
        unexpected = sorted(have - {"runs", "micro", "README.md"})
        if unexpected or (have and "README.md" not in have):
            raise PublishError(f"{to} holds {', '.join(sorted(have))}: not a reference "
                               "directory (README.md, runs/, micro/); give another --to")
    elif os.path.exists(to):
        raise PublishError(f"{to} is not a directory")

    stage = os.path.normpath(to) + ".new"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        lines = []
        for run, run_id in zip(runs, ids):
            copied, compressed = copy_run(run, os.path.join(stage, "runs", run_id))
            lines.append(f"runs/{run_id}: {copied} files as they are, {compressed} compressed")
        if micro:
            os.makedirs(os.path.join(stage, "micro"))
            for m in micro:
                shutil.copyfile(m, os.path.join(stage, "micro", os.path.basename(m)))
                lines.append(f"micro/{os.path.basename(m)}")
        keep = du(to) - du(os.path.join(to, "runs")) - (du(os.path.join(to, "micro"))
                                                         if micro else 0)
        size = du(stage) + keep
        if max_bytes is not None and size > max_bytes:
            raise PublishError(f"the reference would hold {size / (1 << 20):.1f} MiB, more "
                               f"than the {max_bytes / (1 << 20):g} MiB a committed reference "
                               f"may take; {to} is unchanged")
        os.makedirs(to, exist_ok=True)
        for sub in ("runs",) + (("micro",) if micro else ()):
            old = os.path.join(to, sub)
            if os.path.exists(old):
                os.rename(old, os.path.join(stage, sub + ".old"))
            os.rename(os.path.join(stage, sub), old)
        lines.append(f"{size / (1 << 20):.1f} MiB in all")
        return lines
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total
