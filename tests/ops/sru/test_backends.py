"""Every backend of the SRU recurrence against the reference (:mod:`parrnn.ops.sru.reference`): values, ``c_all``
and every gradient, parametrised over the backends (`_helpers.BACKENDS`): the C++ ``cpu`` kernel, the CPU scan,
the CUDA sequential and scan kernels run on the host (the very ``.cu`` files, through the host launcher), and,
marked ``gpu``, the ``cuda`` backend and the CUDA scan on a GPU.

Each backend takes the same `parrnn.ops.sru.contract.RecurrenceArgs`; the scan runs the linear (v1) recurrence
only. What is particular to one backend (thread counts, chunk boundaries, grid-stride loops, prefetch depths, IEEE
corner cases) is tested in its own module with the same comparison (`_helpers.check_backend`).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from _helpers import BACKENDS, check_backend, make_case
from hypothesis import given, settings
from hypothesis import strategies as st

from parrnn.ops import build
from parrnn.ops.sru import scan_cpu

try:
    build.find_compiler()
except build.BuildError as exc:  # pragma: no cover - only on machines without a C++ compiler
    pytest.skip(f"no C++ compiler: {exc}", allow_module_level=True)

ALL_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def _params(cases: list[tuple], v2_index: int | None = None) -> list:
    """(backend, *case) for every backend and case it runs (the scan: the linear recurrence only); ``gpu`` marks
    the GPU backends."""
    return [pytest.param(backend, *case, id=f"{name.replace(' ', '_')}-" + "-".join(map(str, case)),
                         marks=(pytest.mark.gpu,) if backend.gpu else ())
            for name, backend in BACKENDS.items() for case in cases
            if not (backend.linear_only and v2_index is not None and case[v2_index])]


@pytest.fixture(autouse=True)
def split_short(monkeypatch):
    """Let the CPU scan split even very short sequences into chunks (one per thread)."""
    monkeypatch.setattr(scan_cpu, "CPU_MIN_STEPS_PER_THREAD", 1)


# ---- every option, every dtype -----------------------------------------------------------------------------------

OPTIONS = list(itertools.product(("none", "x", "u3"), (False, True), (False, True), (False, True),
                                 ("none", "mixed"), (False, True)))


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize(("backend", "skip", "v2", "bidirectional", "use_tanh", "mask", "drop"),
                         _params(OPTIONS, v2_index=1))
def test_matches_reference_all_options(backend, skip, v2, bidirectional, use_tanh, mask, drop, dtype):
    seed = OPTIONS.index((skip, v2, bidirectional, use_tanh, mask, drop))
    check_backend(backend, make_case(13, 6, 5, skip=skip, v2=v2, bidirectional=bidirectional, use_tanh=use_tanh,
                                     mask=mask, drop=drop, dtype=dtype, seed=seed))


# ---- sizes -------------------------------------------------------------------------------------------------------

#: (L, N, H, options): the smallest, C = 1, a single row, odd sizes, the 4th projection as highway, many columns
#: (several blocks of GPU threads)
SIZES = {
    "smallest": (1, 1, 1, {}),
    "one_column": (4, 5, 1, {"mask": "mixed", "use_tanh": True}),
    "one_row": (9, 1, 3, {"bidirectional": True, "drop": True}),
    "k4_bidirectional_v1": (6, 4, 5, {"skip": "u3", "bidirectional": True, "mask": "mixed", "drop": True,
                                      "v2": False}),
    "k4_even": (6, 3, 4, {"skip": "u3", "use_tanh": True, "drop": True}),
    "no_highway_v1": (6, 3, 5, {"skip": "none", "v2": False}),
    "wide": (37, 5, 129, {"bidirectional": True, "mask": "mixed", "drop": True, "use_tanh": True}),
}


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize(("backend", "size"), _params([(name,) for name in SIZES]))
def test_odd_sizes(backend, size, dtype):
    length, batch, hidden, options = SIZES[size]
    options = {"v2": not backend.linear_only, **options}
    check_backend(backend, make_case(length, batch, hidden, dtype=dtype, seed=length * 100 + hidden, **options))


@pytest.mark.parametrize("dtype", (torch.float64, torch.float32), ids=str)
@pytest.mark.parametrize("backend", _params([()]))
def test_long_sequence(backend, dtype):
    check_backend(backend, make_case(300, 2, 3, skip="x", v2=not backend.linear_only, bidirectional=True,
                                     use_tanh=True, mask="mixed", drop=True, dtype=dtype, seed=3))


@pytest.mark.parametrize("name", [name for name, b in BACKENDS.items() if not b.gpu])
@settings(max_examples=40, deadline=None, derandomize=True)
@given(length=st.integers(1, 40), batch=st.integers(1, 4), hidden=st.integers(1, 9),
       skip=st.sampled_from(("none", "x", "u3")), v2=st.booleans(), bidirectional=st.booleans(),
       use_tanh=st.booleans(), mask=st.sampled_from(("none", "mixed")), drop=st.booleans(),
       dtype=st.sampled_from((torch.float64, torch.float32)), seed=st.integers(0, 2**16))
def test_matches_reference_hypothesis_shapes(name, length, batch, hidden, skip, v2, bidirectional, use_tanh, mask,
                                             drop, dtype, seed):
    backend = BACKENDS[name]
    check_backend(backend, make_case(length, batch, hidden, skip=skip, v2=v2 and not backend.linear_only,
                                     bidirectional=bidirectional, use_tanh=use_tanh, mask=mask, drop=drop,
                                     dtype=dtype, seed=seed), seed=seed + 1)
