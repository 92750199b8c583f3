"""Reading run directories in the tests: metrics rows, compared but for their wall-clock columns."""

from __future__ import annotations

import csv
import math
import pathlib


def csv_rows(run_dir) -> list[dict[str, str]]:
    with open(pathlib.Path(run_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def without_times(row: dict) -> dict[str, float]:
    """A metrics row without its wall-clock columns (the only ones two runs may differ in)."""
    return {k: float(v) for k, v in row.items() if not k.startswith("time/")}


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in
                                        ((a[k], b[k]) for k in a))


def same_metrics(run_a, run_b) -> bool:
    """The two runs' metrics.csv hold the same rows, the time columns aside."""
    a = [without_times(r) for r in csv_rows(run_a)]
    b = [without_times(r) for r in csv_rows(run_b)]
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
