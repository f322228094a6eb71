"""migrate-safe: the guarded upgrade (``sequence``), one migration at a time per database (``lock``),
the record of every run (``journal``), bringing a database back after a failure (``undo``) and after a
killed run (``recover``)."""

from .journal import history, runs, unfinished_runs
from .recover import recover
from .sequence import SCOPES, SafeOptions, SafeResult, run

__all__ = ["SCOPES", "SafeOptions", "SafeResult", "history", "recover", "run", "runs", "unfinished_runs"]
