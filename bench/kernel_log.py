"""Summarises a CubeCL kernel log (`train --kernel-log FILE`, each line stamped with the seconds
since the start): kernels compiled, autotunes run, the seconds spent between each autotune's
start ("Tuning <key>") and its result ("Fastest result"), by kind of key, and the last event.
That is where a slow first update spends its time (docs/GPU.md).

    python bench/kernel_log.py FILE [FILE ...]          # a paragraph per log
    python bench/kernel_log.py --one-line FILE          # one line (bench/gpu.sh)
"""
import argparse
import collections
import re

STAMP = re.compile(r"^\s*([0-9]+\.[0-9]+)s (.*)$")


def summarise(path):
    compiled, tunes, last = 0, [], (0.0, "")
    by_kind = collections.defaultdict(lambda: [0, 0.0])
    open_tune = None
    with open(path, errors="replace") as f:
        for line in f:
            m = STAMP.match(line)
            if not m:
                continue  # continuation lines of multi-line records
            t, msg = float(m.group(1)), m.group(2)
            last = (t, msg)
            if msg.startswith("[Compiling kernel]"):
                compiled += 1
            elif msg.startswith("Tuning "):
                open_tune = (t, msg.split()[1])
            elif msg.startswith("Fastest result") and open_tune:
                seconds = t - open_tune[0]
                tunes.append(seconds)
                by_kind[open_tune[1]][0] += 1
                by_kind[open_tune[1]][1] += seconds
                open_tune = None
    return {
        "compiled": compiled,
        "autotunes": len(tunes),
        "autotune_seconds": sum(tunes),
        "by_kind": dict(by_kind),
        "unfinished_autotune": open_tune,
        "last_seconds": last[0],
        "last_event": last[1][:160],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--one-line", action="store_true")
    args = ap.parse_args()
    for path in args.logs:
        s = summarise(path)
        unfinished = f"; autotune of {s['unfinished_autotune'][1]} unfinished since {s['unfinished_autotune'][0]:.1f}s" \
            if s["unfinished_autotune"] else ""
        line = (f"{s['compiled']} kernels compiled, {s['autotunes']} autotunes taking {s['autotune_seconds']:.1f}s"
                f"{unfinished}; last event at {s['last_seconds']:.1f}s: {s['last_event']}")
        if args.one_line:
            print(line)
            continue
        print(f"{path}: {line}")
        for kind, (n, seconds) in sorted(s["by_kind"].items(), key=lambda kv: -kv[1][1]):
            print(f"  {kind}: {n} autotunes, {seconds:.1f}s")


if __name__ == "__main__":
    main()
