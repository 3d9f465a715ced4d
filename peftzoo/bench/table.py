"""Turn a suite's run JSONs into leaderboard.{md,csv,png} and leaderboard-lr.png (see ``leaderboard``)."""
from __future__ import annotations

from pathlib import Path

from peftzoo.bench import leaderboard

ORDER = leaderboard.ORDER


def write(root, suite: str, optimistic: bool = False) -> Path:
    """The protocol's table (selection on validation); ``optimistic=True``: the flagged best-on-dev view."""
    return leaderboard.write(root, suite, optimistic=optimistic)
