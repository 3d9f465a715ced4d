"""Turn a suite's run JSONs into leaderboard.{md,csv,png} and leaderboard-lr.png (rows and statistics:
``leaderboard``, one config per table: ``configs``)."""
from __future__ import annotations

from pathlib import Path


def write(root, suite: str, optimistic: bool = False, written: list | None = None) -> Path:
    """The protocol's table (selection on validation); ``optimistic=True``: the flagged best-on-dev view. Returns
    the .md path; every file written is appended to ``written``."""
    from peftzoo.bench import leaderboard
    return leaderboard.write(root, suite, optimistic=optimistic, written=written)
