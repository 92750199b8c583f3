"""Training and evaluation from Python: the Rust trainers and the sensor-failure evaluation in this
process (README, "Training from Python").

    import m3ixup

    summary = m3ixup.train("configs/ppo-smoke.toml", overrides=["train.seed=3"],
                           on_update=lambda row: print(row["global_step"], row["charts/reward_per_step"]))
    summary["run_dir"]       # runs/ppo-multimodal-pendulum-<time>: what the `train` binary writes

The run is the `train` binary's, step for step: the same run directory (config.toml,
metrics.csv, metrics.jsonl, TensorBoard events, checkpoints, learning_curve.png), the same
metrics for the same seed, and resume from a checkpoint. It trains with the GIL released, so
other Python threads run meanwhile; `on_update` is called (with the GIL) after each metrics row.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Sequence, Union

from . import _native

__all__ = ["train", "evaluate", "report"]

Config = Union[str, "os.PathLike[str]", Mapping[str, Any]]


def train(
    config: Config,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    runs_dir: str | os.PathLike[str] = "runs",
    overrides: Sequence[str] = (),
    device: str = "flex",
    threads: int | None = None,
    max_updates: int | None = None,
    on_update: Callable[[dict[str, float]], bool | None] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Trains an agent from a config, as ``train --config ...`` does, in this process.

    config: a TOML file's path, TOML text, or a dict of the TOML tables
        (``{"algo": "ppo", "train": {"total_steps": 4096}, ...}``); keys left out take their
        defaults, unknown keys are errors.
    run_dir: the run's directory. When it holds a run (its ``config.toml``), that run continues
        from its last checkpoint (the config must be the same); when it does not exist, the run
        is made there. Without it, a new directory ``<runs_dir>/<algo>-<env>-<UTC time>``.
    overrides: ``"section.key=value"`` strings, as the binary's ``--set``.
    device: ``flex`` (this package's build has the flex backend only; the others need the
        binaries built with their Cargo features).
    threads: CPU threads (default: all cores): LibTorch's op pool; on flex, PPO's learner, which
        splits each minibatch's loss into as many row shards computed in parallel.
    max_updates: stop after this many updates in this call, with a checkpoint (resumable).
    on_update: called with each metrics row (a dict of floats, the ``metrics.csv`` columns);
        returning ``False`` stops the run after that row, with a checkpoint. An exception in it
        stops the run the same way and is raised from ``train``; so is Ctrl-C.
    progress: draw the progress bar (on stderr).

    Returns the summary: ``run_dir``, ``updates``, ``global_step``, ``wall_seconds``, ``sps``,
    ``last_reward_per_step``, ``recent_return``, ``resumed``, ``stopped_by_on_update`` and
    ``rows`` (every metrics row this call logged). Bad input raises ``ValueError`` naming the
    file, key and value; a failure while training raises ``RuntimeError``.
    """
    if isinstance(overrides, (str, bytes)) or not all(isinstance(o, str) for o in overrides):
        raise ValueError('overrides: expected a sequence of "section.key=value" strings')
    if not isinstance(config, (str, os.PathLike, Mapping)):
        raise ValueError(f"config: expected a TOML file's path, TOML text or a dict, got {type(config).__name__}")
    if isinstance(config, Mapping) and not isinstance(config, dict):
        config = dict(config)
    return _native.train(
        config,
        run_dir=None if run_dir is None else os.fspath(run_dir),
        runs_dir=os.fspath(runs_dir),
        overrides=list(overrides),
        device=device,
        threads=threads,
        max_updates=max_updates,
        on_update=on_update,
        progress=progress,
    )


PathLike = Union[str, "os.PathLike[str]"]


def evaluate(
    checkpoints: PathLike | Sequence[PathLike],
    *,
    labels: Sequence[str] | None = None,
    env: str | None = None,
    episodes: int | None = None,
    steps: int | None = None,
    seed: int | None = None,
    p: Sequence[float] | None = None,
    noise: Sequence[float] | None = None,
    frozen: bool = True,
    stochastic: bool = False,
    score: str = "return",
    num_envs: int | None = None,
    workers: int | None = None,
    specialists: Mapping[str, PathLike | Sequence[PathLike]] | None = None,
    full_references: Sequence[PathLike] = (),
    out: PathLike | None = None,
    device: str = "flex",
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The sensor-failure table of trained agents, as the ``evaluate`` binary makes it.

    checkpoints: run directories (their last checkpoint) or checkpoint directories; ``labels``
        names them (default: each directory's name). The other options are the binary's, and
        left out they take its defaults: ``episodes``, ``steps``, ``seed``, ``p`` (dropout
        probabilities), ``noise`` (levels relative to the value range), ``frozen``,
        ``stochastic``, ``score`` (``"return"`` or ``"per-step"``), ``num_envs``, ``workers``,
        ``env`` (another registered environment), ``specialists`` (``{"pixels": run_dir or
        [run_dirs]}``: the references of the single-sensor rows) and ``full_references``.
    out: where ``eval.md``, ``eval.csv``, ``eval.json`` and ``dropout.png`` go (default: the
        first checkpoint's ``eval/``).

    Returns the report (what ``eval.json`` holds: ``rows`` with each agent's scores and
    retention per condition, ``random``, ``config``, ...) with ``out`` added. Bad input raises
    ``ValueError``; a failure while evaluating raises ``RuntimeError``.
    """
    if isinstance(checkpoints, (str, os.PathLike)):
        checkpoints = [checkpoints]
    pairs = []
    for modality, runs in (specialists or {}).items():
        runs = [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
        pairs.append((modality, [os.fspath(r) for r in runs]))
    text, written = _native.evaluate(
        [os.fspath(c) for c in checkpoints],
        labels=None if labels is None else list(labels),
        env=env,
        episodes=episodes,
        steps=steps,
        seed=seed,
        p=None if p is None else list(p),
        noise=None if noise is None else list(noise),
        frozen=frozen,
        stochastic=stochastic,
        score=score,
        num_envs=num_envs,
        workers=workers,
        specialists=pairs,
        full_references=[os.fspath(r) for r in full_references],
        out=None if out is None else os.fspath(out),
        device=device,
        threads=threads,
        progress=progress,
    )
    report = json.loads(text)
    report["out"] = written
    return report


def report(
    results: PathLike,
    *,
    readme: PathLike | None = None,
    generated_by: str | None = None,
    collect: Sequence[PathLike] = (),
) -> dict[str, Any]:
    """The results table of a folder of evaluated runs, as the ``report`` binary makes it.

    results: a folder of run directories named ``<variant>-s<seed>``, each trained and evaluated
        (``eval/eval.json``); the table gives per variant the mean over seeds (± std, and the
        retention) of every evaluation condition, and per run the training figures. Its chart,
        ``learning_curves.png``, is written there.
    readme: also replace the text between ``<!-- results:NAME:begin -->`` and
        ``<!-- results:NAME:end -->`` (NAME: the folder's name) in this file with the table.
    generated_by: the command named on the table's first line (default: this call).
    collect: run directories whose small result files (config, metrics, learning curve,
        evaluation; not checkpoints) are first copied into ``results/<run's name>/``.

    Returns ``markdown``, ``chart`` and ``skipped`` (run directories without an evaluation).
    Raises ``RuntimeError`` naming the file when the folder has no evaluated run or its runs
    were evaluated with different protocols.
    """
    results = os.fspath(results)
    command = generated_by or f"m3ixup.report({results!r})"
    markdown, chart, skipped = _native.report(
        results, generated_by=command, readme=None if readme is None else os.fspath(readme),
        collect=[os.fspath(r) for r in collect],
    )
    return {"markdown": markdown, "chart": chart, "skipped": skipped}
