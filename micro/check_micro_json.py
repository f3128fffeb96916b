#!/usr/bin/python3
"""ctest micro_json: runs userblk_micro on two benchmarks with a tiny minimum time and checks that
its JSON holds both, with the counters and the machine's context the scripts rely on.

  check_micro_json.py PATH/TO/userblk_micro

Exit 0 pass, 1 fail (saying what is wrong). A smoke test: no number is judged.
"""

import json
import os
import subprocess
import sys
import tempfile


from microresult import load  # noqa: E402

WANTED = ["memcpy/4096", "codec/ring:pass"]
CONTEXT = ["platform", "kernel", "cpu_model", "accelerator", "hypervisor", "run_id"]


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) == 2 else 1
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "micro.json")
        argv = [sys.argv[1], "--benchmark_filter=^(memcpy/4096|codec/ring:pass)/",
                "--benchmark_min_time=0.01", f"--benchmark_out={out}",
                "--benchmark_out_format=json", "--micro_context=run_id=ctest"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=100)
        if r.returncode != 0:
            print(f"FAIL: userblk_micro exited {r.returncode}:\n{r.stderr}")
            return 1
        if not os.path.exists(out):
            print(f"FAIL: userblk_micro wrote no {os.path.basename(out)} (--benchmark_out)")
            return 1
        with open(out) as f:
            doc = json.load(f)
        res = load(out)
    problems = []
    for name in WANTED:
        row = res["rows"].get(name)
        if row is None:
            problems.append(f"{name} is not in the JSON (found {sorted(res['rows'])})")
        elif row["error"] or not row["ns_per_op"] or row["ns_per_op"] <= 0:
            problems.append(f"{name}: no time per op ({row})")
    for b in doc["benchmarks"]:
        if "ops" not in b or "bytes" not in b:
            problems.append(f"{b['name']}: the counters ops and bytes are missing")
    for key in CONTEXT:
        if not doc["context"].get(key):
            problems.append(f"the context has no {key}")
    if len(res["rows"]) != len(WANTED):
        problems.append(f"the filter selected {sorted(res['rows'])}, not only {WANTED}")
    for p in problems:
        print(f"FAIL: {p}")
    if not problems:
        print(f"ok: {', '.join(WANTED)} in the JSON with counters and context")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
