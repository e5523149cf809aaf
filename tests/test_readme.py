"""The README's usage example runs as written and its shape comments are true."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    assert tuple(namespace["output"].shape) == (1000, 8, 256)
    assert tuple(namespace["c_n"].shape) == (2, 8, 256)
    assert tuple(namespace["h"].shape) == (8, 128)
    assert namespace["output"][3:, 3].abs().max() == 0  # padding never leaks (length 3)


def test_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "make bench" in text and "make test" in text
