"""Turn a suite's run JSONs into leaderboard.{md,csv,png} and leaderboard-lr.png (rows and statistics:
``leaderboard``, one config per table: ``configs``)."""
from __future__ import annotations

from pathlib import Path


def write(root, suite: str, optimistic: bool = False) -> Path:
    """The protocol's table (selection on validation); ``optimistic=True``: the flagged best-on-dev view."""
    from peftzoo.bench import leaderboard
    return leaderboard.write(root, suite, optimistic=optimistic)
