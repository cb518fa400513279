"""Checks before any trial starts: a study that cannot finish fails here, in one line,
with nothing written (missing weights or data files, an unwritable or nearly full
results disk, a results folder that some cluster node cannot see)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from hpo.spec import Study, StudyError

# Checkpoints and logs of a small study take tens of MiB; a nearly full disk fails before
# any trial starts instead of halfway (HPO_MIN_FREE_MB changes the threshold).
MIN_FREE_MB = 256


def check_free_space(directory: Path) -> None:
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    if not existing.is_dir():
        raise StudyError(f"{directory}: results folder is not writable ({existing} is a file)")
    needed = float(os.environ.get("HPO_MIN_FREE_MB", MIN_FREE_MB))
    free = shutil.disk_usage(existing).free / 2**20
    if free < needed:
        raise StudyError(
            f"{directory}: only {free:.0f} MiB free on its disk, a study needs at least "
            f"{needed:.0f} MiB (free some space or pass --results on another disk)"
        )


def make_writable_folder(directory: Path) -> None:
    """Create the results folder and prove a file can be written there."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise StudyError(f"{directory}: results folder is not writable ({error})") from None


def check_shared_results(directory: Path, timeout_s: float = 60.0) -> None:
    """On a multi-node cluster every node writes its trials' results under `directory`:
    check that each alive node sees a file written here (a shared file system)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    probe = directory / f".shared-probe-{os.getpid()}"
    probe.write_text("visible")
    sees = ray.remote(num_cpus=0)(os.path.exists)
    try:
        answers = [
            sees.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(str(probe))
            for node in nodes
        ]
        seen = ray.get(answers, timeout=timeout_s)
        blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen, strict=True) if not ok]
    finally:
        probe.unlink(missing_ok=True)
    if blind:
        raise StudyError(
            f"--results {directory.parent}: not visible from the cluster node(s) "
            f"{', '.join(sorted(set(blind)))}; on a multi-node cluster give a path that every "
            "node shares (e.g. NFS)"
        )


def absolute_paths(study: Study) -> Study:
    """File-path hyperparameters (e.g. pretrained weights) made absolute: trials run in
    their own folders, possibly on other nodes, and study.json should say which file."""
    from trainables import trainable_info

    if study.runs_function:
        return study  # its hyperparameters mean what the user's code makes of them
    keys = trainable_info(study.trainable).path_params

    def absolute(value: Any) -> Any:
        if isinstance(value, str) and Path(value).expanduser().exists():
            return str(Path(value).expanduser().resolve())
        return value

    fixed = {k: absolute(v) if k in keys else v for k, v in study.fixed.items()}
    space = {
        k: p.model_copy(update={"choice": [absolute(v) for v in p.choice]})
        if k in keys and p.choice
        else p
        for k, p in study.space.items()
    }
    return study.model_copy(update={"fixed": fixed, "space": space})


def check_trainable_inputs(study: Study) -> None:
    """The trainable's own check of the values a study gives it (e.g. weights files)."""
    from trainables import WeightsError, resolve, trainable_info

    if study.runs_function:
        return
    check = trainable_info(study.trainable).check
    if not check:
        return
    values = {k: [v] for k, v in study.fixed.items()}
    values.update({k: list(p.choice) for k, p in study.space.items() if p.choice})
    try:
        resolve(check)(values)
    except WeightsError as error:
        raise StudyError(f"{study.name}: {error}") from None
