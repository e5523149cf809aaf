"""The SRU recurrence contract and its backends (see `parrnn.ops.dispatch`)."""

from parrnn.ops.dispatch import BACKENDS, available_backends, backend_availability, precompile, sru_recurrence

__all__ = ["BACKENDS", "available_backends", "backend_availability", "precompile", "sru_recurrence"]
