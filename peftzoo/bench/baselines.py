"""The baselines are methods like the others: ``peftzoo.adapters.baselines``."""
from peftzoo.adapters.baselines import BASELINES, FullFinetune, HeadOnly  # noqa: F401
