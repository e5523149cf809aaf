"""The support table of docs/protocol.md ("## Support") is the capability list of tests/contract/registry.py:
regenerate it with ``python tests/contract/registry.py`` when a flag changes."""

from __future__ import annotations

from pathlib import Path

from .registry import CAPABILITIES, LAYERS, support_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _support_section() -> str:
    text = DOC.read_text()
    assert "\n## Support" in text, f"{DOC} has no '## Support' section"
    section = text.split("\n## Support", 1)[1]
    return section.split("\n## ", 1)[0]


def test_the_docs_support_table_is_the_capability_list() -> None:
    table_lines = [line for line in _support_section().splitlines() if line.startswith("|")]
    assert "\n".join(table_lines) == support_table(), (
        "docs/protocol.md's support table disagrees with tests/contract/registry.py; paste the output of "
        "`python tests/contract/registry.py`:\n" + support_table())


def test_every_layer_states_every_capability() -> None:
    for layer in LAYERS:
        for capability in CAPABILITIES:
            assert isinstance(getattr(layer, capability), bool), (layer.name, capability)
