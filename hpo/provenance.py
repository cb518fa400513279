"""What a result was made with: package versions, the machine, and UTC timestamps."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from importlib import metadata

from hpo.records import Machine

PACKAGES = ("hpo", "ray", "torch", "torchvision", "optuna", "pandas", "numpy", "scikit-learn")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_info() -> Machine:
    """This host, plus the Ray cluster's CPUs and GPUs when Ray is running."""
    machine = Machine(hostname=platform.node(), cpus=os.cpu_count(), gpus=0)
    try:
        import ray

        if ray.is_initialized():
            resources = ray.cluster_resources()
            machine.cluster_cpus = resources.get("CPU", 0)
            machine.gpus = resources.get("GPU", 0)
    except Exception:  # noqa: BLE001 - machine facts are best effort
        pass
    return machine


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
