"""A study's learning-curve table (`hpo tabulate`): recorded once, replayed many times.

N configurations of the study's space (a seeded sample, or every point of a finite space
that has at most N) × K training seeds, each trained
for the full `max_epochs` as one ordinary Ray Tune experiment under
`<results>/<study>/table/`, resumable like `hpo run`. The table (table.csv) has one row per
config × seed × epoch: config_id, seed, epoch, the searched hyperparameters, every epoch
metric and epoch_time_s; table.json records which configurations, which seeds, and the
hash of the study file they belong to.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpo import preflight
from hpo import results as res
from hpo.files import write_csv
from hpo.provenance import now_iso
from hpo.records import TableRecord, read_table_record, write_table_record
from hpo.spec import Study, StudyError, load_study, study_hash, without_compare

TABLE_DIR = "table"
TABLE_FILE = "table.csv"
EXPERIMENT = "experiment"  # the Ray Tune experiment inside the table folder
CONFIG_ID = "config_id"


def sample_configs(study: Study, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` configurations of the study's searched space, drawn with Ray Tune's own
    domains from one seeded generator: the same list for the same study and seed. A
    space with conditions is sampled by hpo.space (only each config's active parameters:
    Tune's domains would give every config every parameter)."""
    from hpo import space as spaces

    if count < 1:
        raise StudyError(f"--configs: expected a positive number of configurations, got {count}")
    if spaces.is_conditional(study.space):
        return spaces.sample_points(study.space, count, seed)
    generator = np.random.RandomState(seed)
    domains = {name: spaces.tune_domain(param) for name, param in study.space.items()}
    return [
        {name: _plain(domain.sample(random_state=generator)) for name, domain in domains.items()}
        for _ in range(count)
    ]


def table_configs(study: Study, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """The table's configurations: every point of a finite space (choices only) that has
    at most `count` of them, in order, so that a replay looks every proposal up exactly;
    otherwise a seeded sample of `count` (sample_configs)."""
    from hpo import space as spaces

    points = spaces.finite_points(study.space)
    if points is not None and 1 <= len(points) <= count:
        return points
    return sample_configs(study, count, seed)


def tabulate(
    study_file: str | Path,
    results_root: str | Path = "results",
    configs: int = 200,
    seeds: list[int] | None = None,
    sample_seed: int = 0,
    fresh: bool = False,
    address: str | None = None,
    echo: Callable[[str], None] = print,
) -> Path:
    """Train (or finish training) the table of `study_file`; returns the table folder."""
    study_file = Path(study_file)
    study = preflight.absolute_paths(
        without_compare(load_study(study_file), study_file, "tabulate")
    )
    if study.runs_function:
        raise StudyError(
            f"{study_file}: trainable: hpo tabulate records the built-in trainables' curves; "
            "a study of your own function trainable runs with hpo run"
        )
    seeds = list(seeds if seeds is not None else study.seeds)
    planned = table_configs(study, configs, sample_seed)
    folder = Path(results_root).resolve() / study.name / TABLE_DIR
    record = _prepare(folder, study_file, planned, seeds, sample_seed, fresh)
    if record.status == "finished":
        echo(f"{folder}: the table is complete ({record.rows} rows): nothing to do")
        return folder
    preflight.check_trainable_inputs(study)
    from hpo.ray_session import init_ray

    init_ray(address)
    record.started_at = record.started_at or now_iso()
    write_table_record(folder, record)
    echo(f"table of {len(planned)} configs × {len(seeds)} seeds × {study.budget.max_epochs} epochs")
    began = time.time()
    _tuner(study, folder, planned, seeds).fit()
    record.wall_s = (record.wall_s or 0.0) + time.time() - began
    table = _table(study, folder / EXPERIMENT, began)
    expected = len(planned) * len(seeds) * study.budget.max_epochs
    write_csv(folder / TABLE_FILE, table)
    record.rows = len(table)
    if len(table) >= expected or _all_ended(folder / EXPERIMENT):
        record.status, record.ended_at = "finished", now_iso()
    write_table_record(folder, record)
    echo(f"{folder / TABLE_FILE}: {len(table)} rows of {expected}, {record.wall_s:.0f} s")
    if record.status != "finished":  # Tune caught Ctrl-C and saved its state
        echo("interrupted: run the same command again to resume the table")
    return folder


def read_table(folder: str | Path) -> tuple[TableRecord, pd.DataFrame]:
    """table.json and table.csv of a finished table, or one StudyError line."""
    folder = Path(folder)
    record = read_table_record(folder)
    if record is None or not (folder / TABLE_FILE).is_file():
        raise StudyError(f"{folder}: no table (expected the folder `hpo tabulate` writes)")
    return record, pd.read_csv(folder / TABLE_FILE)


def _prepare(
    folder: Path,
    study_file: Path,
    configs: list[dict[str, Any]],
    seeds: list[int],
    sample_seed: int,
    fresh: bool,
) -> TableRecord:
    """The folder's record when it holds this very table, else a new one; a table of
    another study version or other configs is refused unless --fresh."""
    digest = study_hash(study_file)
    previous = read_table_record(folder) if not fresh else None
    wanted = {"study_hash": digest, "configs": configs, "seeds": seeds}
    if previous is not None:
        if {k: getattr(previous, k) for k in wanted} == wanted:
            return previous
        raise StudyError(
            f"{folder}: holds a table of another version of {study_file} or of other "
            "configs/seeds; use --fresh to start over or --results to write elsewhere"
        )
    preflight.check_free_space(folder.parent)
    shutil.rmtree(folder, ignore_errors=True)
    preflight.make_writable_folder(folder)
    return TableRecord(study_file=str(study_file), sample_seed=sample_seed, **wanted)


def _tuner(study: Study, folder: Path, configs: list[dict[str, Any]], seeds: list[int]):
    """Every config × seed as one trial of a Ray Tune experiment (or its restore)."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from hpo import space as spaces
    from hpo.runner import study_data
    from trainables.tune_trial import run_trial

    split = study.dataset.split_seed
    data = study_data(study, study.seeds[0] if split is None else split)  # one fixed split
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            data=data,
            trainable_name=study.trainable,
            max_epochs=study.budget.max_epochs,
            threads=max(1, int(study.resources.cpu)),
            gpu=study.resources.gpu,
            # Per-epoch checkpoints of hundreds of trials made the table I/O-bound (70 %
            # iowait measured); a trial cut short by Ctrl-C or a failure restarts instead.
            checkpoints=False,
        ),
        {"cpu": study.resources.cpu, "gpu": study.resources.gpu},
    )
    path = folder / EXPERIMENT
    if tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True)
    points = [
        {**config, CONFIG_ID: index, "seed": seed}
        for index, config in enumerate(configs)
        for seed in seeds
    ]
    cap = study.max_concurrent_trials or 0
    if spaces.is_conditional(study.space):  # points may lack keys: see PointsGenerator
        from hpo.strategies.points import PointsGenerator

        search_alg = PointsGenerator(points, max_concurrent=cap)
    else:
        search_alg = BasicVariantGenerator(points_to_evaluate=points, max_concurrent=cap)
    return tune.Tuner(
        trainable,
        param_space={**spaces.tune_space(study.space, study.fixed), CONFIG_ID: 0, "seed": 0},
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            num_samples=len(points),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=str(folder),
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
            verbose=0,
        ),
    )


def _table(study: Study, experiment: Path, began: float) -> pd.DataFrame:
    frame = res.trial_frame(
        experiment,
        "table",
        0,
        study.budget.max_epochs,
        run_started=began,
        run_finished=True,
        config_keys=[CONFIG_ID, "seed", *study.space],
    )
    if frame.empty:
        return frame
    frame = frame.rename(columns={f"config/{CONFIG_ID}": CONFIG_ID, "config/seed": "seed_"})
    frame = frame.drop(columns=["strategy", "seed", "cum_epochs", "wall_s", "proposed_by"])
    frame = frame.rename(columns={"seed_": "seed"})
    keep = [CONFIG_ID, "seed", "epoch", "status"]
    rest = [c for c in frame.columns if c not in keep and c not in ("node_ip", "pid", "node_id")]
    return frame[keep + rest].sort_values([CONFIG_ID, "seed", "epoch"]).reset_index(drop=True)


def _all_ended(experiment: Path) -> bool:
    trials = res.load_analysis(experiment).trials
    return all(t.status in ("TERMINATED", "ERROR") for t in trials)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
