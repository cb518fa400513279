"""Replay: strategies compared over many seeds on recorded learning curves.

`hpo tabulate` records a table of curves once (hpo.tabulate); `hpo replay` then runs
every strategy × seed as a discrete-event simulation driving the same Ray Tune searchers
and schedulers that real studies use, on a simulated clock (hpo.replay.simulator), with
curves looked up in the table or predicted by a surrogate (hpo.replay.curves), and
writes a results folder the report reads (hpo.replay.runs).
"""
