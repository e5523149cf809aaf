"""Progress bars for the command-line tools: tqdm when it is installed (the ``tasks`` and ``bench`` extras),
otherwise a silent stand-in, so that the console scripts run with the core dependencies only."""

from __future__ import annotations

import sys
from typing import Any


class SilentBar:
    """The part of tqdm's interface the tools use, doing nothing."""

    def set_postfix(self, *_: object, **__: object) -> None: ...
    def set_postfix_str(self, *_: object, **__: object) -> None: ...
    def update(self, *_: object) -> None: ...
    def close(self) -> None: ...


def progress_bar(enabled: bool, *, extra: str, **tqdm_kwargs: Any) -> Any:
    """``tqdm(**tqdm_kwargs)`` when ``enabled`` and tqdm imports; else a `SilentBar`
    (with a one-line note on stderr naming the extra to install when a bar was wanted)."""
    if not enabled:
        return SilentBar()
    try:
        from tqdm import tqdm  # noqa: PLC0415 - optional dependency
    except ImportError:
        print(f"tqdm is not installed: no progress bar (pip install parrnn[{extra}])", file=sys.stderr)
        return SilentBar()
    return tqdm(**tqdm_kwargs)
