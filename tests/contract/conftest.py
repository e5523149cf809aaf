"""The contract suite's setup: the known failures (known_failures.py) become strict xfails; markers."""

from __future__ import annotations

from pathlib import Path

import pytest

from .known_failures import KNOWN_FAILURES


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "contract_graphs: torch.compile/export/TorchScript/ONNX contract cases "
                                       "(small sizes; the group stays under ~3 min)")
    config.addinivalue_line("markers", "distributed: multi-process (gloo, 2 CPU processes) contract cases")


def case_id(item: pytest.Item) -> str:
    """``<module stem>::<test name with parameters>``, the key of KNOWN_FAILURES."""
    return f"{Path(str(item.fspath)).stem}::{item.name}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here not in Path(str(item.fspath)).parents:
            continue
        reason = KNOWN_FAILURES.get(case_id(item))
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
