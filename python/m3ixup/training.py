"""Training from Python: the Rust trainers in this process (README, "Training from Python").

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

import os
from typing import Any, Callable, Mapping, Sequence, Union

from . import _native

__all__ = ["train"]

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
    threads: LibTorch's CPU threads (ignored on flex).
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
