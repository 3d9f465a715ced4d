"""peftzoo: parameter-efficient fine-tuning methods under one Adapter interface, measured honestly."""
from peftzoo.api import attach, count, load, load_peft, make_config, methods

__version__ = "0.1.0"
# Bumped whenever a change alters what a benchmark run computes (training, data, evaluation): it is part of every
# run's identity, so results of the old behaviour are re-run instead of being answered again.
BEHAVIOUR_VERSION = 2  # 2: length-grouped batches reshuffled every epoch, evaluation in length order
__all__ = ["attach", "count", "load", "load_peft", "make_config", "methods", "__version__"]
