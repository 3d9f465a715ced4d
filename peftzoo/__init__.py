"""peftzoo: parameter-efficient fine-tuning methods under one Adapter interface, measured honestly."""
from peftzoo.api import attach, count, load, load_peft, make_config, methods

__version__ = "0.1.0"
__all__ = ["attach", "count", "load", "load_peft", "make_config", "methods", "__version__"]
