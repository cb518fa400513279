"""The typed record of a results folder: `study.json` and each run's `hpo_run.json`.

The runner writes them, and status, export, the report and the synthetic report
benchmark read them, all through the one reader and the one writer below. A file from a
newer hpo (a higher `format`) or one that is not a record at all is refused with one line
naming the file and the field; a file written before records had a `format` (hpo 0.1 up to
this change) is upgraded when read, so finished results stay usable.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_serializer

from hpo.files import write_json
from hpo.spec import DatasetSpec, Resources, Study, StudyError, resolved

RECORD_FORMAT = 1  # what this hpo writes; it reads this and the unversioned files before it
STUDY_FILE = "study.json"
RUN_MARKER = "hpo_run.json"
TABLE_RECORD_FILE = "table.json"

RunStatus = Literal["running", "finished", "interrupted", "failed"]
RUN_STATUSES: tuple[str, ...] = RunStatus.__args__


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BestTrial(_Record):
    """A run's selected trial-epoch (by validation only) and its test measurement."""

    trial_id: str
    epoch: int
    cum_epochs: int  # epochs the run had spent when this one was reported
    metric: str  # the study's validation metric
    value: float
    config: dict[str, Any]
    # Measured once on the test split from the trial's best checkpoint, e.g. test_accuracy
    # and test_loss; None where there was no checkpoint to measure.
    test: dict[str, float | None] = {}
    checkpoint_epoch: int | None = None


class RunRecord(_Record):
    """One strategy × seed run: `<strategy>/seed-<k>/hpo_run.json`, also kept in study.json."""

    format: int = RECORD_FORMAT
    strategy: str
    seed: int
    status: RunStatus = "running"
    started: float  # time.time() when the run first started; trials.csv's wall_s counts from it
    started_at: str | None = None
    ended_at: str | None = None
    driver_pid: int | None = None  # the `hpo run` process, so status tells a killed one
    driver_host: str | None = None
    fit_started: float | None = None  # the current Tuner.fit call's start
    wall_s: float | None = None  # seconds in Tuner.fit over every resume; None before one ended
    # Of wall_s, seconds the driver spent deciding: inside the searcher's and the scheduler's
    # calls (suggest, on_trial_result, choose_trial_to_run …; hpo.strategies.decision);
    # None for a run that was resumed (Tune's restored copies are not timed).
    decision_s: float | None = None
    # Seconds its trials spent training (Tune's time_this_iter_s, summed over the epochs
    # kept): its own busy time, which wall_s is not when runs share the machine.
    busy_s: float | None = None
    parallel_runs: int = 1  # runs that `hpo run` ran at once beside (and with) this one
    data_sizes: dict[str, int] = {}
    errors: int | None = None  # trials that Ray Tune reported as errored
    trials: int | None = None
    epochs: int | None = None
    statuses: dict[str, int] = {}  # trial status (finished, early_stopped, …) → trials
    best: BestTrial | None = None
    error: str | None = None  # why the run itself stopped, when it failed
    # Config values this run's trials took over the study's: a compared level's warm start
    # (init_from) or the learning-rate bounds of another level's range test (lr, lr_min).
    overrides: dict[str, Any] = {}

    @property
    def key(self) -> str:
        return run_key(self.strategy, self.seed)


class Machine(_Record):
    hostname: str
    cpus: int | None = None
    gpus: float = 0
    cluster_cpus: float | None = None


class ReplayInfo(_Record):
    """How a replayed study (`hpo replay`) was simulated: on which learning-curve table,
    with how many simulated workers, and how well its surrogate predicts held-out curves.
    Its runs' wall_s and trials.csv's wall_s are simulated seconds; nothing was trained."""

    simulated: Literal[True] = True
    table: str  # the table folder (hpo tabulate)
    table_hash: str  # the study hash the table was recorded for
    table_configs: int
    table_seeds: list[int]
    workers: int
    charge_decisions: bool  # whether the searchers' measured decision time advanced the clock
    # How a proposed configuration's curve is found: "exact" (the table holds every config
    # the strategies can propose) or the surrogate's description for the others.
    surrogate: str | None = None
    # Held-out error of the surrogate (configs left out of its fit): mean absolute error of
    # the study's metric at max_epochs, and over every epoch of the curve.
    surrogate_mae_final: float | None = None
    surrogate_mae_curve: float | None = None
    predicted_share: float | None = None  # share of simulated trial-epochs the surrogate gave
    real_s: float | None = None  # seconds the replay itself took
    simulated_s: float | None = None  # simulated seconds over every run


class StudyRecord(_Record):
    """`<results>/<study>/study.json`: the resolved study, provenance and every run."""

    format: int = RECORD_FORMAT
    study: Study
    study_file: str
    study_hash: str
    versions: dict[str, str] = {}
    machine: Machine | None = None
    started_at: str | None = None
    ended_at: str | None = None
    runs: dict[str, RunRecord] = {}
    replay: ReplayInfo | None = None  # set for a replay (hpo replay): simulated, not trained
    # A variant of a compared study (hpo.compare): factor → level it runs
    variant: dict[str, str] | None = None

    @property
    def simulated(self) -> bool:
        return self.replay is not None

    @field_serializer("study")
    def _plain_study(self, study: Study) -> dict[str, Any]:
        return resolved(study)

    @property
    def metric(self) -> str:
        return self.study.metric.name

    @property
    def mode(self) -> str:
        return self.study.metric.mode

    def run(self, strategy: str, seed: int) -> RunRecord | None:
        return self.runs.get(run_key(strategy, seed))


class TableRecord(_Record):
    """`<results>/<study>/table/table.json`: a learning-curve table (hpo tabulate) — which
    configurations and training seeds, of which version of the study file."""

    format: int = RECORD_FORMAT
    study_file: str
    study_hash: str
    sample_seed: int  # the configurations are a sample of the space with this seed
    configs: list[dict[str, Any]]  # config_id → the searched hyperparameters
    seeds: list[int]  # training seeds, each config trained once per seed
    status: str = "running"  # running | finished
    started_at: str | None = None
    ended_at: str | None = None
    wall_s: float | None = None  # seconds in Tuner.fit over every resume
    rows: int | None = None  # rows of table.csv: config × seed × epoch


def run_key(strategy: str, seed: int) -> str:
    return f"{strategy}/seed-{seed}"


def run_dir(study_dir: str | Path, strategy: str, seed: int) -> Path:
    return Path(study_dir) / strategy / f"seed-{seed}"


class ValidationScore(_Record):
    metric: str
    mode: Literal["max", "min"]
    value: float
    epoch: int  # the epoch of the trial that reached `value`
    max_epochs: int  # the study's R


class TestScore(_Record):
    accuracy: float | None = None
    loss: float | None = None
    # every test metric measured, e.g. a function trainable's evaluate(): {"test_mse": …}
    metrics: dict[str, float | None] = {}


EXPORT_KIND = "hpo-best-config"


class ExportRecord(_Record):
    """A selected configuration with its provenance (`hpo export`; read by `hpo retrain`)."""

    kind: Literal["hpo-best-config"] = EXPORT_KIND
    study: str
    strategy: str
    seed: int
    trial_id: str
    trainable: str
    # split_seed set: the split this run trained and was tested on; None: a function
    # trainable, which loads its own data
    dataset: DatasetSpec | None
    config: dict[str, Any]
    validation: ValidationScore
    test: TestScore = TestScore()  # None where the study measured another trial
    resources: Resources = Resources()
    versions: dict[str, str] = {}
    study_file: str | None = None
    study_hash: str | None = None
    exported_at: str | None = None


# ---------------------------------------------------------------- the writer
def write_study_record(study_dir: str | Path, record: StudyRecord) -> Path:
    return write_json(Path(study_dir) / STUDY_FILE, record.model_dump(mode="json"))


def write_run_record(directory: str | Path, record: RunRecord) -> Path:
    """`directory` is the run's folder (`run_dir`)."""
    return write_json(Path(directory) / RUN_MARKER, record.model_dump(mode="json"))


def write_table_record(table_dir: str | Path, record: TableRecord) -> Path:
    return write_json(Path(table_dir) / TABLE_RECORD_FILE, record.model_dump(mode="json"))


# ---------------------------------------------------------------- the reader
def read_table_record(table_dir: str | Path) -> TableRecord | None:
    """table.json of a table folder, or None where no table was started."""
    path = Path(table_dir) / TABLE_RECORD_FILE
    return _validate(TableRecord, _load(path), path) if path.is_file() else None


def read_study_record(study_dir: str | Path) -> StudyRecord:
    """study.json of a results folder; StudyError (one line) when absent or unreadable."""
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        raise StudyError(f"{study_dir}: no {STUDY_FILE} (expected a results folder of hpo run)")
    data = _load(path)
    if _is_legacy(data):
        data = _upgrade_study(data)
    return _validate(StudyRecord, data, path)


def read_run_record(directory: str | Path) -> RunRecord | None:
    """The run's hpo_run.json, or None for a run that never started."""
    path = Path(directory) / RUN_MARKER
    if not path.is_file():
        return None
    data = _load(path)
    if _is_legacy(data):
        data = _upgrade_run(data)
    return _validate(RunRecord, data, path)


def read_export(path: str | Path) -> ExportRecord:
    """An `hpo export` file (YAML or JSON); StudyError (one line) names what is wrong."""
    import yaml

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"{path}: no such export file") from None
    except yaml.YAMLError as error:
        raise StudyError(f"{path}: invalid YAML/JSON ({error.__class__.__name__})") from None
    if not isinstance(document, dict) or document.get("kind") != EXPORT_KIND:
        raise StudyError(
            f"{path}: not an hpo export (expected kind: {EXPORT_KIND}; see hpo export)"
        )
    try:
        return ExportRecord.model_validate(document)
    except ValidationError as error:
        raise StudyError(f"{path}: {_first_error(error)}") from None


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise StudyError(f"{path}: unreadable ({type(error).__name__}: {error})") from None


def _validate(model: type[_Record], data: Any, path: Path) -> Any:
    if not isinstance(data, dict):
        raise StudyError(f"{path}: expected a JSON object written by hpo run")
    found = data.get("format")
    if isinstance(found, int) and found > RECORD_FORMAT:
        raise StudyError(
            f"{path}: written by a newer hpo (format {found}); this hpo reads format "
            f"{RECORD_FORMAT} and older: upgrade hpo to read it"
        )
    if found != RECORD_FORMAT:
        raise StudyError(f"{path}: format: expected {RECORD_FORMAT}, got {found!r}")
    try:
        # Saved results name their trainable without running it (a custom one is fine).
        return model.model_validate(data, context={"trusted": True})
    except ValidationError as error:
        raise StudyError(
            f"{path}: {_first_error(error)} (not a record written by hpo run)"
        ) from None


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "record"
    if first["type"] == "missing":
        return f"{field}: required field is missing"
    if first["type"] == "extra_forbidden":
        return f"{field}: unknown field"
    return f"{field}: {first['msg'].removeprefix('Value error, ')}"


# -------------------------------------------- files from before `format` existed
def _is_legacy(data: Any) -> bool:
    return isinstance(data, dict) and "format" not in data


def _upgrade_study(data: dict[str, Any]) -> dict[str, Any]:
    runs = {key: _upgrade_run(run) for key, run in (data.get("runs") or {}).items()}
    return {**data, "format": RECORD_FORMAT, "runs": runs}


def _upgrade_run(data: Any) -> Any:
    """Unversioned markers kept the selected trial's metric under its own name (e.g.
    `val_accuracy`) and test metrics beside it; a record names them."""
    if not isinstance(data, dict):
        return data
    best = data.get("best")
    if isinstance(best, dict) and "metric" not in best:
        data = {**data, "best": _upgrade_best(best)}
    return {**data, "format": RECORD_FORMAT}


_BEST_FIELDS = ("trial_id", "epoch", "cum_epochs", "config", "checkpoint_epoch")


def _upgrade_best(best: dict[str, Any]) -> dict[str, Any]:
    metrics = [k for k in best if k not in _BEST_FIELDS and not k.startswith("test_")]
    if len(metrics) != 1:
        return best  # not an old record either: validation names what is wrong
    metric = metrics[0]
    value = best[metric]
    return {
        **{k: best[k] for k in _BEST_FIELDS if k in best},
        "metric": metric,
        "value": math.nan if value is None else value,
        "test": {k: v for k, v in best.items() if k.startswith("test_")},
    }


__all__ = [
    "RECORD_FORMAT",
    "RUN_MARKER",
    "RUN_STATUSES",
    "STUDY_FILE",
    "TABLE_RECORD_FILE",
    "EXPORT_KIND",
    "BestTrial",
    "ExportRecord",
    "Machine",
    "RunRecord",
    "StudyRecord",
    "TableRecord",
    "read_export",
    "read_run_record",
    "read_study_record",
    "read_table_record",
    "run_dir",
    "run_key",
    "write_run_record",
    "write_study_record",
    "write_table_record",
]
