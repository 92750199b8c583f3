"""CPU figures of the backends (README, section "Backends and devices"): one GMC-encoder training
step (batch 128, GMC loss, Adam) on flex and on LibTorch CPU, each as a ratio to PyTorch on the
same machine, in the same run, with the thread counts set explicitly.

    eval "$(scripts/setup-libtorch.sh)"
    cargo build --release --features tch --bin bench
    python bench/cpu_backends.py [--bench target/release/bench] [--threads 1 2] [--rounds 3]

Each round runs every (backend, threads) case once, in a rotated order, as separate processes
(LibTorch accepts its inter-op thread count once per process); a case's figure is the median
over rounds of its per-process median step time. Ratios are backend / PyTorch at the same thread
count (> 1: slower than PyTorch). Writes the raw runs as JSON with --json-out.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(cmd, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default=str(HERE.parent / "target/release/bench"), help="the bench binary (built with --features tch)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--backends", nargs="+", default=["pytorch", "flex", "libtorch"])
    ap.add_argument("--json-out")
    args = ap.parse_args()

    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
    cases = []
    for t in args.threads:
        for b in args.backends:
            # Flex (as built here, without burn-flex's rayon feature) runs on one thread whatever
            # --threads says: measured once.
            if b == "flex" and t != args.threads[0]:
                continue
            cases.append((b, t))

    def command(backend, t):
        if backend == "pytorch":
            return [sys.executable, str(HERE / "torch_gmc.py"), "--threads", str(t)] + common
        return [args.bench, "encoders", "--gmc-only", "--json", "--device", backend, "--threads", str(t)] + common

    runs = []
    for r in range(args.rounds):
        order = cases[r % len(cases):] + cases[: r % len(cases)]
        for backend, t in order:
            res = run(command(backend, t), t)
            res.update(case_backend=backend, case_threads=t, round=r)
            runs.append(res)
            print(f"round {r}: {backend:9s} threads {t}: median {res['gmc_median']:.3f} s/step", file=sys.stderr)

    def figure(backend, t):
        meds = [x["gmc_median"] for x in runs if x["case_backend"] == backend and x["case_threads"] == t]
        return statistics.median(meds) if meds else None

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"GMC-encoder training step, batch {args.batch_size}, GMC loss, Adam; {cpu}, {os.cpu_count()} logical CPUs; "
          f"median over {args.rounds} rounds of the median of {args.steps} steps after {args.warmup} warm-up")
    print()
    print("| backend | threads | s/step | vs PyTorch (same threads) |")
    print("|---|---:|---:|---:|")
    for t in args.threads:
        ref = figure("pytorch", t)
        for b in args.backends:
            bt = args.threads[0] if b == "flex" else t
            f = figure(b, bt)
            if f is None:
                continue
            ratio = f"{f / ref:.2f}x" if ref else "n/a"
            label = {"pytorch": "PyTorch 2.9.0 (reference)", "flex": "flex (Autodiff<Flex>)", "libtorch": "libtorch (Autodiff<LibTorch>, CPU)"}.get(b, b)
            note = " (1 thread always)" if b == "flex" else ""
            print(f"| {label}{note} | {t} | {f:.3f} | {ratio} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"cpu": cpu, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
