"""The comparison report: a study's saved results → one self-contained HTML page.

`build_report(study_dir)` reads `study.json` and `trials.csv` (never a live Tuner) and
writes `<study_dir>/report/index.html` with the figures (PNG) and tables (CSV) beside it.
`tables` computes, `figures` draws, `html` writes; `build` puts them together.
A study that compares factors (`compare:`) gets `compare.build_compare_report`'s page,
which puts its variants' reports side by side. `many_seeds` holds the comparisons that
need many seeds (a replay's); `replay_summary` is the line that opens the report of a
replay.
"""

from __future__ import annotations

from hpo.report.build import build_report, load_results, replay_summary

__all__ = ["build_report", "load_results", "replay_summary"]
