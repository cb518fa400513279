"""hpo: hyperparameter-optimization studies on Ray Tune, from the command line or Python.

The Python API is the command line's own functions (see hpo.api and the README's "Python
API"); heavy modules (Ray, torch, the report) are imported only when used.
"""

from __future__ import annotations

from hpo.api import as_study, run
from hpo.results import Results, load_results
from hpo.spec import Study, StudyError, load_study
from hpo.strategies import STRATEGIES

__all__ = [
    "STRATEGIES",
    "Results",
    "Study",
    "StudyError",
    "as_study",
    "load_results",
    "load_study",
    "run",
]
