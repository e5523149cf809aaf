"""The API reference is written in the site's Markdown: no Sphinx/reST markup in docstrings or rendered pages.

mkdocstrings renders the docstrings as Markdown, so a Sphinx role (``:class:`SRU```) or a ``.. math::``
directive shows up as raw text on the site. ``scripts/mkdocs_hooks.py`` fails ``mkdocs build`` on such a page;
these tests check that hook's detector and, without building the site, every docstring of the package.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_hooks():
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


find_literal_markup = _load_hooks().find_literal_markup


@pytest.mark.parametrize("html", [
    "<p>a drop-in replacement for :class:<code>torch.nn.LSTM</code></p>",  # a role after Markdown rendering
    "see :func:`parrnn.available_backends`",  # a role as written in a docstring
    "<p>For every time step :math:<code>t</code></p>",
    "uses :py:meth:`forward`",
    "<p>.. math::\n    f_t = \\sigma(x)</p>",
    "<p>Example::</p>\n<pre><code>&gt;&gt;&gt; rnn = SRU(4, 8)</code></pre>",
])
def test_find_literal_markup_flags_sphinx_and_rest(html: str) -> None:
    assert len(find_literal_markup(html)) == 1


@pytest.mark.parametrize("html", [
    '<p>see <a class="autorefs autorefs-internal" href="#parrnn.SRUCell">SRUCell</a></p>',
    '<p>time step <span class="arithmatex">\\(t\\)</span></p><div class="arithmatex">\\[ c_t = f_t \\]</div>',
    "<p>a class: <code>SRU</code>, a ratio 1:2, a label: value</p>",
    "<pre><code>std::vector&lt;float&gt; x; a[::2]</code></pre>",
    "<p>Examples:</p>",
])
def test_find_literal_markup_passes_markdown(html: str) -> None:
    assert find_literal_markup(html) == []


def _docstrings(path: Path) -> list[tuple[int, str]]:
    """Every string statement of a module (module, class, function and attribute docstrings), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.lineno, node.value.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)]


def _markup_in_docstrings(path: Path, root: Path) -> list[str]:
    """``path:line: text`` of every Sphinx role, reST directive or literal-block marker (``Example::``)."""
    found = []
    for line, doc in _docstrings(path):
        where = f"{path.relative_to(root)}:{line}"
        found += [f"{where}: {hit!r}" for hit in find_literal_markup(doc)]
        found += [f"{where}: reST literal block {text.strip()!r}" for text in doc.splitlines()
                  if text.rstrip().endswith("::") and not text.lstrip().startswith("..")]  # directives: above
    return found


def test_package_docstrings_have_no_sphinx_markup() -> None:
    found = [hit for path in sorted((ROOT / "parrnn").rglob("*.py")) for hit in _markup_in_docstrings(path, ROOT)]
    assert not found, "Sphinx/reST markup in docstrings (write Markdown: `x`, [SRU][parrnn.SRU], $x$):\n" + \
        "\n".join(found)


def test_docstring_scan_finds_markup(tmp_path: Path) -> None:  # the scan above must be able to fail
    module = tmp_path / "pkg" / "mod.py"
    module.parent.mkdir()
    module.write_text('''"""Module: see :mod:`torch`."""


class A:
    r"""One layer.

    .. math::
        c_t = f_t c_{t-1}

    Example::

        >>> A()
    """

    x = 1
    """Attribute docstring with :data:`X`."""

    def f(self) -> None:
        """Clean: [SRU][parrnn.SRU], $t$, `x`."""
''')
    found = _markup_in_docstrings(module, tmp_path)
    assert len(found) == 4, found
    assert [hit.split(":")[1] for hit in found] == ["1", "5", "5", "16"]
