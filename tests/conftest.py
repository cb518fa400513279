from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY_STUDY: dict[str, Any] = {
    "name": "tiny",
    "description": "a few epochs on digits, for tests",
    "trainable": "cnn",
    "dataset": {"name": "digits"},
    "fixed": {"channels": 8, "hidden_units": 16},
    "space": {
        "lr": {"loguniform": {"low": 1.0e-3, "high": 3.0e-2}},
        "optimizer": {"choice": ["momentum", "adam"]},
    },
    "metric": {"name": "val_accuracy", "mode": "max"},
    "budget": {"max_epochs": 4, "min_epochs": 1, "reduction_factor": 2, "total_epochs": 16},
    "seeds": [0],
    "max_concurrent_trials": 2,
}


class ListReporter:
    """The training loop's Reporter for tests: keeps every report (metrics and checkpoint
    state) in memory; optionally starts from a saved state, as a resumed trial does."""

    def __init__(self, state: dict | None = None):
        self.rows: list[dict] = []
        self.states: list[dict | None] = []
        self._start = state

    def restore(self) -> dict | None:
        return self._start

    def report(self, metrics: dict, state: dict | None) -> None:
        self.rows.append(metrics)
        self.states.append(state)


def run_hpo(*args: str) -> subprocess.CompletedProcess:
    """`python -m hpo.cli ARGS` in a fresh process, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args], capture_output=True, text=True, env=env
    )


@pytest.fixture
def study_dict() -> dict[str, Any]:
    return copy.deepcopy(TINY_STUDY)


@pytest.fixture
def write_study(tmp_path: Path):
    """Write a study mapping (or raw text) to a YAML file and return its path."""

    def write(content: dict[str, Any] | str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        return path

    return write


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance shared by the tests that run real Tune experiments."""
    import os

    import ray
    from ray._private import ray_constants

    from hpo.ray_session import SINGLE_HOST_ENV

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if not ray.is_initialized():
        os.environ[SINGLE_HOST_ENV] = "0"  # on loopback only, as hpo run's local Ray
        ray_constants.ENABLE_RAY_CLUSTER = False
        ray.init(
            address="local",  # never a cluster that another test started with `ray start`
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            _node_ip_address="127.0.0.1",
            # workers import test modules (fake trainables) from the repository
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_study_run(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """The one real `hpo run` of TINY_STUDY (every registered strategy, one seed) that
    test_end_to_end and test_report_e2e both read: (study file, results folder, the
    finished command). Tests may read it, re-run it (nothing to do) or rebuild its report,
    and must leave it as they found it."""
    root = tmp_path_factory.mktemp("tiny-study")
    study_file = root / "tiny.yaml"
    study_file.write_text(yaml.safe_dump(TINY_STUDY))
    done = run_hpo("run", str(study_file), "--results", str(root / "results"))
    assert done.returncode == 0, done.stderr[-3000:]
    return study_file, root / "results" / "tiny", done
