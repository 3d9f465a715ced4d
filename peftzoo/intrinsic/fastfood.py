"""The Fastfood projection lives with the method that uses it: ``peftzoo.adapters.fastfood``."""
from peftzoo.adapters.fastfood import DenseProjection, Fastfood, fwht, hadamard  # noqa: F401
