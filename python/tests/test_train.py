"""m3ixup.train and m3ixup.evaluate: the Rust trainers and evaluation in this process
(python/m3ixup/training.py).

The comparison with the `train` binary runs conftest.py's `train_binary` (skipped without cargo).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import threading
import time
import tomllib

import pytest


import m3ixup
from run_files import csv_rows, same, without_times

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "ppo-smoke.toml"
# 2 rows would end the smoke config (128 steps of 64): 4 updates give room to stop and resume.
LONGER = ["train.total_steps=256"]


def test_train_from_python_writes_the_metrics_the_train_binary_writes_for_the_same_seed(tmp_path, train_binary):
    subprocess.run([str(train_binary), "--config", str(SMOKE), "--set", "train.seed=11", "--runs-dir", str(tmp_path),
                    "--run-name", "binary", "--quiet"], check=True, capture_output=True)
    summary = m3ixup.train(str(SMOKE), overrides=["train.seed=11"], run_dir=tmp_path / "python")

    expected = [without_times(r) for r in csv_rows(tmp_path / "binary")]
    written = [without_times(r) for r in csv_rows(summary["run_dir"])]
    returned = [without_times(r) for r in summary["rows"]]
    assert len(expected) == 2
    assert all(same(a, b) for a, b in zip(expected, written)) and len(written) == 2, (expected, written)
    assert all(same(a, b) for a, b in zip(expected, returned)) and len(returned) == 2
    assert summary["updates"] == 2 and summary["global_step"] == 128 and not summary["resumed"]
    for name in ("config.toml", "checkpoint.toml", "metrics.jsonl", "learning_curve.png"):
        assert (tmp_path / "python" / name).is_file(), name


def test_config_as_a_dict_or_as_toml_text_trains_like_the_file(tmp_path):
    text = SMOKE.read_text()
    from_text = m3ixup.train(text, run_dir=tmp_path / "text")
    from_dict = m3ixup.train(tomllib.loads(text), run_dir=tmp_path / "dict")
    from_file = m3ixup.train(SMOKE, run_dir=tmp_path / "file")  # a pathlib.Path
    rows = [[without_times(r) for r in s["rows"]] for s in (from_text, from_dict, from_file)]
    assert len(rows[0]) == 2
    assert all(same(a, b) for a, b in zip(rows[0], rows[1])) and all(same(a, b) for a, b in zip(rows[0], rows[2]))


def test_on_update_sees_every_row_and_returning_false_stops_the_run_at_a_checkpoint_it_resumes_from(tmp_path):
    seen = []

    def stop_after_two(row):
        seen.append(row)
        return len(seen) < 2

    stopped = m3ixup.train(SMOKE, overrides=LONGER, run_dir=tmp_path / "run", on_update=stop_after_two)
    assert stopped["stopped_by_on_update"] and stopped["updates"] == 2 and len(seen) == 2
    assert seen[0]["global_step"] == 64.0 and "charts/reward_per_step" in seen[0]

    resumed = m3ixup.train(SMOKE, overrides=LONGER, run_dir=tmp_path / "run", on_update=lambda row: None)
    assert resumed["resumed"] and not resumed["stopped_by_on_update"] and resumed["updates"] == 4
    whole = m3ixup.train(SMOKE, overrides=LONGER, run_dir=tmp_path / "whole")
    a = [without_times(r) for r in csv_rows(tmp_path / "run")]
    b = [without_times(r) for r in csv_rows(tmp_path / "whole")]
    assert len(a) == 4 and all(same(x, y) for x, y in zip(a, b)), (a, b)


def test_an_exception_in_on_update_stops_the_run_and_is_raised(tmp_path):
    def fail(row):
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        m3ixup.train(SMOKE, overrides=LONGER, run_dir=tmp_path / "run", on_update=fail)
    assert len(csv_rows(tmp_path / "run")) == 1
    assert (tmp_path / "run" / "checkpoint.toml").is_file()


def test_bad_input_raises_value_error_naming_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown field `learning_rat`"):
        m3ixup.train({"ppo": {"learning_rat": 0.1}}, run_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="expected section.key=value"):
        m3ixup.train(SMOKE, overrides=["train.seed"], run_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="device"):
        m3ixup.train(SMOKE, device="tpu:0", run_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="no such file"):
        m3ixup.train("configs/no-such-config.toml", run_dir=tmp_path / "d")
    with pytest.raises(ValueError, match="overrides"):
        m3ixup.train(SMOKE, overrides="train.seed=1", run_dir=tmp_path / "e")
    m3ixup.train(SMOKE, run_dir=tmp_path / "f", max_updates=1)
    with pytest.raises(ValueError, match="holds a run of another config"):
        m3ixup.train(SMOKE, overrides=["train.seed=2"], run_dir=tmp_path / "f")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_training_releases_the_gil(tmp_path):
    ticks = 0
    done = threading.Event()

    def count():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    started = time.perf_counter()
    try:
        m3ixup.train(SMOKE, overrides=LONGER, run_dir=tmp_path / "run")
    finally:
        done.set()
        counter.join()
    seconds = time.perf_counter() - started
    # A thread that sleeps 1 ms per tick gets hundreds of ticks a second when the GIL is free;
    # held for the whole run, it would get one per metrics row at most.
    assert ticks >= 50 * seconds, (ticks, seconds)


def test_evaluate_from_python_reports_what_the_evaluate_binary_reports(tmp_path, evaluate_binary):
    run = m3ixup.train(SMOKE, run_dir=tmp_path / "run")["run_dir"]
    protocol = dict(episodes=4, steps=20, num_envs=2, p=[0.5], noise=[0.2], score="per-step")
    report = m3ixup.evaluate(run, labels=["smoke"], out=tmp_path / "python-eval", **protocol)
    subprocess.run([str(evaluate_binary), "--checkpoint", run, "--label", "smoke", "--episodes", "4", "--steps", "20",
                    "--num-envs", "2", "--p", "0.5", "--noise", "0.2", "--score", "per-step",
                    "--out", str(tmp_path / "binary-eval"), "--quiet"], check=True, capture_output=True)
    expected = json.loads((tmp_path / "binary-eval" / "eval.json").read_text())
    written = json.loads((tmp_path / "python-eval" / "eval.json").read_text())
    assert report["out"] == str(tmp_path / "python-eval")
    for got in (report, written):
        assert got["agents"] == ["smoke"] and len(got["rows"]) == len(expected["rows"]) > 3
        # Everything but the wall time (and the path this call adds) is the same.
        assert {k: v for k, v in got.items() if k not in ("wall_seconds", "out")} == \
            {k: v for k, v in expected.items() if k != "wall_seconds"}
    for name in ("eval.md", "eval.csv", "dropout.png"):
        assert (tmp_path / "python-eval" / name).is_file(), name
    with pytest.raises(ValueError, match="score"):
        m3ixup.evaluate(run, score="median", out=tmp_path / "bad")
    with pytest.raises(ValueError, match="2 labels for 1 checkpoints"):
        m3ixup.evaluate(run, labels=["a", "b"], out=tmp_path / "bad")


def test_report_from_python_renders_the_report_binarys_table(tmp_path, report_binary):
    results = tmp_path / "ppo-pendulum"
    shutil.copytree(ROOT / "results" / "ppo-pendulum", results)
    printed = subprocess.run([str(report_binary), "--results", str(results)], check=True, capture_output=True,
                             text=True).stdout
    command = f"cargo run --release --bin report -- --results {results}"
    table = m3ixup.report(results, generated_by=command)
    assert printed == table["markdown"] + "\n"
    assert "| condition | m3ixup (3 seeds) | gmc (3 seeds) | none (3 seeds) | dropout (3 seeds) |" in printed
    assert table["chart"] == str(results / "learning_curves.png") and table["skipped"] == []

    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- results:ppo-pendulum:begin -->\nold\n<!-- results:ppo-pendulum:end -->\nafter\n")
    m3ixup.report(results, readme=readme, generated_by=command)
    assert readme.read_text() == (f"before\n<!-- results:ppo-pendulum:begin -->\n{table['markdown']}"
                                  "<!-- results:ppo-pendulum:end -->\nafter\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError, match="no evaluated runs"):
        m3ixup.report(empty)
