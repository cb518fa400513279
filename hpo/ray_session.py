"""Starting Ray for a study: in-process on loopback only, or joining an existing cluster."""

from __future__ import annotations

import logging
import os

# Ray turns 127.0.0.1 into this machine's outward address, and its servers then listen on
# every interface, unless multi-node support is off (ray_constants.ENABLE_RAY_CLUSTER).
SINGLE_HOST_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class _NotRemoteFileNotFound(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Remote file not found")


def quiet_ray() -> None:
    """One line per run is the progress report: silence Tune's tables and advisories."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Trials that the budget ended before they started have no rows: not worth a warning.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # A PBT member paused before its first result.json line is looked up on resume.
    logging.getLogger("ray.tune.logger.logger").addFilter(_NotRemoteFileNotFound())
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def init_ray(address: str | None = None) -> None:
    """Connect to `address` (an existing cluster) or start Ray locally on loopback only."""
    if not address:
        os.environ[SINGLE_HOST_ENV] = "0"  # read by Ray's own processes as they start
    import ray
    from ray._private import ray_constants

    from trainables import ALLOW_CUSTOM_ENV, custom_allowed

    quiet_ray()
    if ray.is_initialized():
        return
    if address:
        # Workers of an existing cluster do not inherit this process's environment.
        allow = {ALLOW_CUSTOM_ENV: "1"} if custom_allowed() else {}
        ray.init(
            address=address,
            log_to_driver=False,
            logging_level="WARNING",
            runtime_env={"env_vars": allow} if allow else None,
        )
    else:
        ray_constants.ENABLE_RAY_CLUSTER = False  # in case Ray was imported before the env
        ray.init(
            # "local": a new instance, even where `ray start` left a cluster on this
            # machine (ray.init() would join it, or hang on a dead one's address file)
            address="local",
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
            _node_ip_address="127.0.0.1",
        )
