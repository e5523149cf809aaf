"""The SRU recurrence contract and its backends (see `parrnn.ops.sru.dispatch`)."""

from parrnn.ops.sru.dispatch import BACKENDS, available_backends, backend_availability, precompile, sru_recurrence

__all__ = ["BACKENDS", "available_backends", "backend_availability", "precompile", "sru_recurrence"]
