"""Reading a run directory back: the HTML report and the table of runs.

Only the run directory's files are read (never a live loop's objects), so both
work on a finished run and on one still in flight.
"""

from .data import RunData, find_runs, read_run
from .html import render, write_report
from .runs import run_rows

__all__ = ["RunData", "find_runs", "read_run", "render", "run_rows", "write_report"]
