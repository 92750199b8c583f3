"""Sweeps on Ray Tune: many training runs (variants x grid points x seeds), each a normal run
directory, then the sensor-failure evaluation of every run and one results table (README, "Many
runs: sweeps on Ray").

    python -m m3ixup.sweep configs/ppo-smoke.toml --seeds 3 --grid ppo.learning_rate=1e-3,3e-4
    python -m m3ixup.sweep m3ixup=configs/ppo-pendulum-m3ixup.toml gmc=configs/ppo-pendulum-gmc.toml \\
        --seeds 3 --eval-score per-step --results results/ppo-pendulum --readme README.md
    python -m m3ixup.sweep ... --address ray://head:10001 --cpus-per-trial 1   # on a cluster

Each trial is one (variant, grid point, seed): ``m3ixup.train`` with the config, the grid
point's and ``--set``'s overrides and ``train.seed=<seed>``, in ``<out>/<variant>-s<seed>``
(what the ``train`` binary writes), reporting every metrics row to Tune; then ``m3ixup.evaluate``
of that run into its ``eval/``. A trial that fails or whose worker dies is restarted by Tune
(``--max-failures``) and continues from its run directory's last checkpoint, as does a sweep
started again with the same arguments: finished trials are not trained again. At the end the
table of the ``report`` binary (``m3ixup.report``) over all trials goes to ``<out>/results.md``
(or into ``--results``, where the runs' small result files are copied, and the README).

Without ``--address`` Ray starts on this machine and stops with the sweep; with it, the trials run
on that cluster, whose nodes need this package installed and ``--out`` on a filesystem they all
share (the trials write the run directories there, and continue from them).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from . import _native
from .training import evaluate, report, train

__all__ = ["Trial", "plan", "sweep", "main"]


@dataclass(frozen=True)
class Trial:
    """One run of a sweep."""

    name: str  # <variant>-s<seed>: the run directory's name, and Tune's trial name
    variant: str
    seed: int
    config: str  # the config file's absolute path
    overrides: tuple[str, ...]  # --set's, the grid point's, then train.seed=<seed>
    run_dir: str  # absolute


def _split_values(text: str) -> list[str]:
    """``v1,v2,...`` split at the commas outside brackets and quotes (``[64,64],[32]`` is two)."""
    values, depth, quote, current = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(current)
            current = ""
            continue
        current += ch
    values.append(current)
    return values


def _parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or "." not in key:
            raise ValueError(f"--grid {item!r}: expected section.key=v1,v2,... (e.g. ppo.learning_rate=1e-3,3e-4)")
        parsed = [v.strip() for v in _split_values(values)]
        if any(not v for v in parsed):
            raise ValueError(f"--grid {item!r}: an empty value (values are separated by commas)")
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"--grid {item!r}: a value appears twice")
        if any(k == key for k, _ in grid):
            raise ValueError(f"--grid {key}: given twice (give its values in one --grid)")
        grid.append((key, parsed))
    return grid


def _parse_configs(items: Sequence[str]) -> list[tuple[str, str]]:
    """(variant name, absolute path) of each ``CONFIG`` or ``NAME=CONFIG``."""
    configs = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or os.path.isfile(item):
            name, path = os.path.splitext(os.path.basename(item))[0], item
        if not os.path.isfile(path):
            raise ValueError(f"config {path!r}: no such file (give CONFIG or NAME=CONFIG)")
        configs.append((_safe_name(name), os.path.abspath(path)))
    names = [n for n, _ in configs]
    for n in names:
        if names.count(n) > 1:
            raise ValueError(f"two configs are named {n!r}: name them, as NAME=CONFIG")
    return configs


def _safe_name(text: str) -> str:
    """A directory-name-safe variant name (the run directories are ``<variant>-s<seed>``)."""
    return re.sub(r"[^A-Za-z0-9._=,+\[\]-]", "_", text)


def plan(
    configs: Sequence[str],
    *,
    seeds: int,
    first_seed: int = 1,
    grid: Sequence[str] = (),
    overrides: Sequence[str] = (),
    out: str | os.PathLike[str],
) -> list[Trial]:
    """The sweep's trials, every config checked (``ValueError`` naming the trial, key and value).

    configs: ``CONFIG`` or ``NAME=CONFIG``; a variant per config (named NAME, or the file's stem)
    and per grid point (``key=value`` items, comma-separated, after the config's name when
    there are several configs). Seeds ``first_seed .. first_seed + seeds - 1``.
    """
    if seeds < 1:
        raise ValueError(f"--seeds {seeds}: expected at least 1")
    if not configs:
        raise ValueError("give at least one config")
    parsed = _parse_configs(configs)
    axes = _parse_grid(grid)
    out = os.path.abspath(os.fspath(out))
    trials, names = [], set()
    for name, path in parsed:
        for point in itertools.product(*[[(k, v) for v in values] for k, values in axes]):
            point_name = ",".join(f"{k}={v}" for k, v in point)
            variant = name if not point else _safe_name(point_name if len(parsed) == 1 else f"{name},{point_name}")
            for seed in range(first_seed, first_seed + seeds):
                trial_overrides = (*overrides, *(f"{k}={v}" for k, v in point), f"train.seed={seed}")
                try:
                    _native.config_toml(path, overrides=list(trial_overrides))
                except ValueError as e:
                    raise ValueError(f"trial {variant}-s{seed}: {e}") from None
                run_name = f"{variant}-s{seed}"
                if run_name in names:
                    raise ValueError(f"two trials would share the run directory {run_name}: name the configs apart "
                                     "(NAME=CONFIG)")
                names.add(run_name)
                trials.append(Trial(run_name, variant, seed, path, trial_overrides, os.path.join(out, run_name)))
    return trials


# What a trial's evaluation was asked with, beside its eval.json: a sweep started again with
# other evaluation options evaluates again.
_EVALUATED_WITH = "sweep-evaluation.json"


def _evaluated(run_dir: str, options: dict[str, Any]) -> bool:
    """The run's evaluation is there, newer than its last checkpoint, with these options."""
    result, checkpoint = os.path.join(run_dir, "eval", "eval.json"), os.path.join(run_dir, "checkpoint.toml")
    try:
        with open(os.path.join(run_dir, "eval", _EVALUATED_WITH)) as f:
            same_options = json.load(f) == options
        return same_options and os.path.getmtime(result) >= os.path.getmtime(checkpoint)
    except (OSError, ValueError):
        return False


def _run_trial(param: dict[str, Any]) -> None:
    """Tune's trainable: trains the trial's run (continuing its directory), reports every metrics
    row, then evaluates it."""
    from ray import tune

    trial = Trial(**{**param["trial"], "overrides": tuple(param["trial"]["overrides"])})
    threads = param["threads"]
    summary = train(
        trial.config,
        run_dir=trial.run_dir,
        overrides=trial.overrides,
        threads=threads,
        on_update=lambda row: tune.report(dict(row)),
    )
    final = {"global_step": float(summary["global_step"]), "resumed": float(summary["resumed"])}
    if param["evaluate"] is not None:
        if _evaluated(trial.run_dir, param["evaluate"]):
            with open(os.path.join(trial.run_dir, "eval", "eval.json")) as f:
                result = json.load(f)
        else:
            result = evaluate([trial.run_dir], labels=[trial.variant], out=os.path.join(trial.run_dir, "eval"),
                              threads=threads, **param["evaluate"])
            _write_atomic(os.path.join(trial.run_dir, "eval", _EVALUATED_WITH), json.dumps(param["evaluate"]))
        score = f"{result['config']['score'].replace('-', '_')}_mean"
        final.update({f"eval/{row['condition']}": row[score] for row in result["rows"]})
    # The last report: what Tune's result holds for the trial (`resumed`: this attempt continued
    # a checkpoint, after a failure or in a sweep started again).
    tune.report(final)


def _write_atomic(path: str, text: str) -> None:
    """Writes ``path`` whole or not at all (a crash leaves the old file or the new one)."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def sweep(
    configs: Sequence[str],
    *,
    seeds: int,
    first_seed: int = 1,
    grid: Sequence[str] = (),
    overrides: Sequence[str] = (),
    out: str | os.PathLike[str] | None = None,
    address: str | None = None,
    cpus: int | None = None,
    cpus_per_trial: float = 1,
    max_failures: int = 3,
    evaluation: dict[str, Any] | None = None,
    results: str | os.PathLike[str] | None = None,
    readme: str | os.PathLike[str] | None = None,
    command: str | None = None,
    verbose: int = 1,
) -> dict[str, Any]:
    """Runs a sweep (see the module's documentation) and returns its summary: ``trials`` (name,
    run_dir, status, error, and ``resumed``: its last attempt continued a checkpoint),
    ``table`` (the results table's path, None when no trial finished), ``wall_seconds``.
    ``evaluation``: ``m3ixup.evaluate``'s keywords for every run (None: do not evaluate, and
    write no table). ``cpus``: the local Ray instance's CPUs (default: all).
    """
    if out is None:
        out = os.path.join("runs", "sweeps", _safe_name(os.path.splitext(os.path.basename(configs[0]))[0]))
    out = os.path.abspath(os.fspath(out))
    trials = plan(configs, seeds=seeds, first_seed=first_seed, grid=grid, overrides=overrides, out=out)
    if cpus_per_trial <= 0:
        raise ValueError(f"--cpus-per-trial {cpus_per_trial}: expected a positive number")
    try:
        import ray
        from ray import tune
    except ImportError as e:
        raise ValueError(f'sweeps run on Ray Tune, which is not installed ({e}): pip install "m3ixup[sweep]"') from None
    os.makedirs(out, exist_ok=True)
    started = time.monotonic()

    # Trials keep the driver's working directory (Tune's default moves them into its own trial
    # folders), so that relative paths in configs (an encoder checkpoint) mean what they mean
    # to the `train` binary started here.
    keep_cwd = {"RAY_CHDIR_TO_TRIAL_DIR": "0"}
    own_ray = not ray.is_initialized()
    if own_ray:
        if address is None:
            os.environ.update(keep_cwd)
            ray.init(num_cpus=cpus or os.cpu_count(), include_dashboard=False, log_to_driver=verbose > 1)
        else:
            ray.init(address=address, log_to_driver=verbose > 1, runtime_env={"env_vars": keep_cwd})
    try:
        threads = max(1, int(cpus_per_trial))
        tuner = tune.Tuner(
            tune.with_resources(_run_trial, {"cpu": cpus_per_trial}),
            param_space={
                "trial": tune.grid_search([{**asdict(t), "overrides": list(t.overrides)} for t in trials]),
                "threads": threads,
                "evaluate": evaluation,
            },
            tune_config=tune.TuneConfig(
                # A finished trial's worker process runs the next one: no process start and
                # imports per trial (about 2 s each here).
                reuse_actors=True,
                trial_name_creator=lambda tr: tr.config["trial"]["name"],
                trial_dirname_creator=lambda tr: tr.config["trial"]["name"],
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=out,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                verbose=verbose,
            ),
        )
        grid_results = tuner.fit()
    finally:
        if own_ray:
            ray.shutdown()

    # Each trial's outcome, in the plan's order.
    by_name = {result.config["trial"]["name"]: result for result in grid_results}
    outcome = []
    for trial in trials:
        result = by_name[trial.name]
        error = None if result.error is None else f"{type(result.error).__name__}: {result.error}"
        outcome.append({"name": trial.name, "run_dir": trial.run_dir,
                        "status": "finished" if error is None else "failed", "error": error,
                        "resumed": bool((result.metrics or {}).get("resumed", 0.0))})

    table = None
    finished = [t["run_dir"] for t in outcome if t["status"] == "finished"]
    if evaluation is not None and finished:
        # With --results, the runs' small files are copied there first and the table made there.
        folder, collect = (out, []) if results is None else (os.fspath(results), finished)
        rendered = report(folder, readme=readme, generated_by=command or "m3ixup.sweep", collect=collect)
        table = os.path.join(out, "results.md")
        _write_atomic(table, rendered["markdown"])
    summary = {"trials": outcome, "table": table, "wall_seconds": time.monotonic() - started}
    _write_atomic(os.path.join(out, "sweep.json"), json.dumps(summary, indent=2) + "\n")
    return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m m3ixup.sweep",
        description="Train, evaluate and tabulate many runs (configs x grid points x seeds) as Ray Tune trials.",
    )
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="a TOML config, or NAME=CONFIG to name its variant")
    p.add_argument("--seeds", type=int, required=True, help="seeds per variant: train.seed = first-seed, ...")
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a variant per value (repeat for a product): section.key=v1,v2,...")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every trial, as train's --set")
    p.add_argument("--out", help="where the run directories go (default: runs/sweeps/<first config's name>)")
    p.add_argument("--address", help="an existing Ray cluster (default: a local Ray instance on this machine)")
    p.add_argument("--cpus", type=int, help="the local Ray instance's CPUs (default: all of this machine's)")
    p.add_argument("--cpus-per-trial", type=float, default=1,
                   help="CPUs Ray reserves per trial (default 1: flex trains on one thread)")
    p.add_argument("--max-failures", type=int, default=3, help="restarts of a failed trial, each from its checkpoint")
    p.add_argument("--no-eval", action="store_true", help="train only: no evaluation, no table")
    p.add_argument("--eval-episodes", type=int)
    p.add_argument("--eval-steps", type=int)
    p.add_argument("--eval-score", choices=["return", "per-step"], default="return")
    p.add_argument("--eval-p", type=float, nargs="+", metavar="P", help="sensor-dropout probabilities")
    p.add_argument("--eval-noise", type=float, nargs="+", metavar="SIGMA", help="noise levels")
    p.add_argument("--results", help="copy the runs' result files (not checkpoints) here and make the table there")
    p.add_argument("--readme", help="replace this file's <!-- results:NAME:begin/end --> section with the table "
                                    "(NAME: the results folder's name)")
    p.add_argument("--quiet", action="store_true", help="no Tune progress table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    evaluation = None
    if not args.no_eval:
        evaluation = {"score": args.eval_score}
        for key in ("episodes", "steps", "p", "noise"):
            value = getattr(args, f"eval_{key}")
            if value is not None:
                evaluation[key] = value
    if args.readme and not args.results:
        print("error: --readme needs --results (the README names the results folder)", file=sys.stderr)
        return 2
    try:
        summary = sweep(
            args.configs, seeds=args.seeds, first_seed=args.first_seed, grid=args.grid, overrides=args.overrides,
            out=args.out, address=args.address, cpus=args.cpus, cpus_per_trial=args.cpus_per_trial,
            max_failures=args.max_failures, evaluation=evaluation, results=args.results, readme=args.readme,
            command="python -m m3ixup.sweep " + " ".join(argv), verbose=0 if args.quiet else 1,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = [t for t in summary["trials"] if t["status"] != "finished"]
    for t in summary["trials"]:
        print(f"{t['status']:>8}  {t['run_dir']}" + (f"  ({t['error']})" if t["error"] else ""))
    if summary["table"]:
        print(f"results table: {summary['table']}")
    print(f"{len(summary['trials']) - len(failed)} of {len(summary['trials'])} trials finished "
          f"in {summary['wall_seconds']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
