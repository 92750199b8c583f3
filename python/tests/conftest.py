"""Fixtures shared by the Python tests."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def binaries():
    """The directory of the `train`, `evaluate` and `report` binaries, built by cargo with the test
    profile: the build `cargo test` leaves, so after it this costs nothing. Skipped without cargo."""
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not on PATH: the test builds and runs the binaries")
    subprocess.run(["cargo", "build", "--quiet", "--profile", "test", "--bin", "train", "--bin", "evaluate",
                    "--bin", "report"],
                   cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    return target / "debug"


@pytest.fixture(scope="session")
def train_binary(binaries):
    return binaries / "train"


@pytest.fixture(scope="session")
def evaluate_binary(binaries):
    return binaries / "evaluate"


@pytest.fixture(scope="session")
def report_binary(binaries):
    return binaries / "report"
