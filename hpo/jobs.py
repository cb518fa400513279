"""A study as a Ray Job (`hpo submit`, `hpo logs`, and `hpo status JOB_ID`).

Ray's Job Submission API does the work: the project code and the study file are uploaded
as the job's working_dir (never results/, .venv/ or .git/), and the job runs `hpo run`
on the cluster with `--address auto`. The job's metadata records which study and which
results root it writes, so `hpo status` can find them from the job id alone.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpo.files import write_text
from hpo.spec import StudyError, load_study

REPO = Path(__file__).resolve().parents[1]
# Never uploaded: results (can be large, and are written on the cluster), environments,
# version control and caches.
EXCLUDES = [
    "results/",
    ".venv/",
    "venv/",
    ".git/",
    "**/__pycache__/",
    ".pytest_cache/",
    ".ruff_cache/",
    "*.egg-info/",
    "data/",
]
STAGED_STUDY = "hpo_submitted_study.yaml"


def client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise StudyError(f"--address {address}: no Ray job server there ({error})") from None


def entrypoint(
    study_path: str, results: str, strategies: list[str] | None, allow_custom: bool = False
) -> str:
    words = ["python", "-m", "hpo.cli", "run", study_path, "--results", results]
    words += ["--address", "auto"]
    if strategies:
        words += ["--strategies", ",".join(strategies)]
    if allow_custom:
        words += ["--allow-custom"]
    return shlex.join(words)


def submit(
    study_file: str | Path,
    address: str,
    results: str = "results",
    strategies: list[str] | None = None,
    allow_custom: bool = False,
) -> str:
    """Submit `hpo run STUDY` as a Ray Job and return its submission id.

    The study file travels inside the working_dir (copied next to the code when it lives
    elsewhere); `results` is where the job writes on the cluster (made absolute here, so
    on a one-machine cluster results land where they would with `hpo run`; on a
    multi-node cluster give a path every node shares; URIs such as s3://… are refused).
    """
    study_file = Path(study_file)
    study = load_study(study_file)  # a bad study fails here, before anything is sent
    if "://" in results:
        # `hpo run` writes through local paths (records, trials.csv, Tune's storage_path):
        # an s3://… root would become a local folder named "s3:" in the job's directory.
        raise StudyError(
            f"--results {results}: object storage is not supported yet; give a folder that "
            "every cluster node sees (e.g. an NFS mount)"
        )
    results = str(Path(results).resolve())  # the same absolute path on the cluster
    try:
        relative = study_file.resolve().relative_to(REPO)
        study_path, staged = str(relative), None
    except ValueError:  # outside the project: stage a copy that travels with the code
        staged = REPO / STAGED_STUDY
        write_text(staged, study_file.read_text())
        study_path = STAGED_STUDY
    try:
        job_id = client(address).submit_job(
            entrypoint=entrypoint(study_path, results, strategies, allow_custom),
            runtime_env={"working_dir": str(REPO), "excludes": EXCLUDES},
            metadata={"hpo_study": study.name, "hpo_results": results},
        )
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)
    return job_id


def job_info(job_id: str, address: str) -> dict[str, Any]:
    try:
        info = client(address).get_job_info(job_id)
    except RuntimeError as error:
        raise StudyError(f"{job_id}: no such job at {address} ({error})") from None
    return {
        "status": str(info.status.value if hasattr(info.status, "value") else info.status),
        "message": info.message or "",
        "metadata": dict(info.metadata or {}),
        "entrypoint": info.entrypoint,
    }


def follow_logs(job_id: str, address: str, echo: Callable[[str], None] = print) -> None:
    """Print a job's output as it comes, until the job ends."""
    job_client = client(address)

    async def tail() -> None:
        async for chunk in job_client.tail_job_logs(job_id):
            echo(chunk.rstrip("\n"))

    try:
        asyncio.run(tail())
    except RuntimeError as error:
        raise StudyError(f"{job_id}: cannot follow its logs at {address} ({error})") from None
