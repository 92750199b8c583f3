"""The event files of a `train` run, read by TensorBoard's own reader, hold what metrics.csv holds.

Runs the `train` binary (conftest.py's `train_binary`) on the PPO smoke config, with a resume that drops a
logged row, as after a crash between a metrics row and its checkpoint. Needs the `tensorboard`
package (`.ci/run` installs it); skipped without it or without cargo.
"""

import csv
import math
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

try:
    from tensorboard.backend.event_processing import event_accumulator, event_file_loader
except ImportError:
    pytest.skip("tensorboard is not installed (pip install tensorboard to run this test)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]


def train(binary, *args):
    subprocess.run([str(binary), *args, "--quiet"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def checkpoint_dir(run):
    """The directory `checkpoint.toml` points at."""
    pointer = (run / "checkpoint.toml").read_text()
    return run / re.search(r'dir\s*=\s*"([^"]+)"', pointer).group(1)


def csv_columns(run):
    """Each metrics.csv column but global_step: its non-empty cells as (step, float32 value)."""
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for row in rows:
        step = int(row["global_step"])
        for key, cell in row.items():
            if key != "global_step" and cell != "":
                columns.setdefault(key, []).append((step, np.float32(float(cell))))
    return columns


def same(a, b):
    return a == b or (math.isnan(a) and math.isnan(b))


def test_tensorboards_reader_reads_the_csvs_scalars_once_each(train_binary, tmp_path):
    runs = tmp_path / "runs"
    smoke = ["--config", "configs/ppo-smoke.toml", "--set", "train.total_steps=256"]
    smoke += ["--set", "train.checkpoint_every=2", "--runs-dir", str(runs), "--run-name", "tb"]
    run = runs / "tb"
    train(train_binary, *smoke, "--max-updates", "2")
    at_two = checkpoint_dir(run)
    pointer = (run / "checkpoint.toml").read_text()
    kept = tmp_path / "kept"
    shutil.copytree(at_two, kept)
    train(train_binary, "--resume", str(run), "--max-updates", "1")
    # A crash after update 3 was logged, before its checkpoint: the next resume logs it again.
    shutil.copytree(kept, at_two)
    (run / "checkpoint.toml").write_text(pointer)
    train(train_binary, "--resume", str(run))

    files = sorted(p.name for p in run.iterdir() if "tfevents" in p.name)
    assert len(files) == 3, files

    # TensorBoard's loader, file by file: every (tag, step) once in the files themselves.
    counts = Counter()
    for name in files:
        for event in event_file_loader.EventFileLoader(str(run / name)).Load():
            for value in event.summary.value:
                counts[(value.tag, event.step)] += 1
    assert counts and max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]

    # TensorBoard's accumulator over the run (what `tensorboard --logdir` shows for it).
    accumulator = event_accumulator.EventAccumulator(str(run), size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    columns = csv_columns(run)
    assert [step for step, _ in columns["losses/policy"]] == [64, 128, 192, 256]
    assert sorted(accumulator.Tags()["scalars"]) == sorted(columns)
    for tag, expected in columns.items():
        got = [(e.step, np.float32(e.value)) for e in accumulator.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in expected], tag
        assert all(same(g, e) for (_, g), (_, e) in zip(got, expected)), (tag, got, expected)
