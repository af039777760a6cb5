"""Hydra-configured benchmark sweeps of Gemma inference in JAX."""

__version__ = "0.1.0"
