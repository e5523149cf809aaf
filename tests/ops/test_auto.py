"""`parrnn.ops.auto.first_available`: the first backend that runs, else the reference with one warning."""

from __future__ import annotations

import warnings

import pytest
import torch

from parrnn.ops import auto

CPU = torch.device("cpu")


def _availability(table: dict[str, tuple[bool, str]]):
    calls: list[str] = []

    def availability(name: str) -> tuple[bool, str]:
        calls.append(name)
        return table[name]

    return availability, calls


def test_first_working_candidate_in_rule_order_and_no_further_checks() -> None:
    availability, calls = _availability({"scan": (False, "no"), "cpu": (True, ""), "cuda": (True, "")})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chosen = auto.first_available(["scan", "cpu", "cuda"], availability, op="op", device=CPU,
                                      dtype=torch.float32, warned=set(), stacklevel=2)
    assert chosen == "cpu" and calls == ["scan", "cpu"]


def test_none_available_falls_back_to_reference_and_warns_once_with_the_reason() -> None:
    log = "kernel.cu(3): error: expected a ';'\nkernel.cu(9): warning: unused\n"
    availability, _ = _availability({"cuda": (False, log)})
    warned: set[str] = set()
    with pytest.warns(RuntimeWarning, match=r"sru_recurrence: the 'cuda' backend is unavailable on cpu .*"
                                            r"error: expected a ';'.*reference"):
        assert auto.first_available(["cuda"], availability, op="sru_recurrence", device=CPU,
                                    dtype=torch.float32, warned=warned, stacklevel=2) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent
        assert auto.first_available(["cuda"], availability, op="sru_recurrence", device=CPU,
                                    dtype=torch.float32, warned=warned, stacklevel=2) == "reference"
    with pytest.warns(RuntimeWarning, match="float64"):  # another dtype is another key
        auto.first_available(["cuda"], availability, op="sru_recurrence", device=CPU, dtype=torch.float64,
                             warned=warned, stacklevel=2)


def test_no_rule_applies_means_reference_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert auto.first_available([], lambda name: (True, ""), op="op", device=CPU, dtype=torch.float32,
                                    warned=set(), stacklevel=2) == "reference"


def test_reason_summary_prefers_error_lines_and_is_bounded() -> None:
    assert auto.reason_summary("a\nb error here\nc") == "b error here"
    assert auto.reason_summary("first\nsecond") == "first | second"
    assert auto.reason_summary("") == "unknown reason"
    assert len(auto.reason_summary("error " * 1000)) == 600


def test_first_runnable_names_the_last_rejected_candidate_without_warning() -> None:
    availability, calls = _availability({"scan": (False, "no scan"), "cpu": (False, "no build")})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert auto.first_runnable(["scan", "cpu"], availability) == (None, ("cpu", "no build"))
        assert auto.first_runnable([], availability) == (None, None)
    assert calls == ["scan", "cpu"]
