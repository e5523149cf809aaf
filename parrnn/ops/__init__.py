"""The ops (compute only, no nn.Module): `sru`, `linear_recurrence`, `gru_rows`, with their backends chosen by one
registry (`parrnn.ops.registry`)."""

from parrnn.ops.registry import available_backends, backend_availability, precompile, reprobe
from parrnn.ops.sru.dispatch import BACKENDS, sru_recurrence

__all__ = ["BACKENDS", "available_backends", "backend_availability", "precompile", "reprobe", "sru_recurrence"]
