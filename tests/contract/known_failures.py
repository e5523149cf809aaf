# ruff: noqa: E501
"""Contract cases that fail on the current tree, each with its error: ``"<module>::<test id>": reason``.

tests/contract/conftest.py marks each listed case ``xfail(strict=True)``, so a fix makes its entry fail as XPASS
until the entry is removed here. Keep /tmp/team/contract_failures.md in step with this file. Regenerate from a run:
``pytest tests/contract --junitxml=j.xml`` (with this dict emptied), then the failing cases are the entries.
"""

from __future__ import annotations

KNOWN_FAILURES: dict[str, str] = {}
