"""The documentation is true: its runnable commands and code run, its markup renders, its layers say their shapes.

**Runnable blocks.** A fenced ``bash`` or ``python`` block in README.md or docs/ whose preceding line (blank
lines aside) is the HTML comment ``<!-- runnable -->`` is executed by `test_runnable_shell_block` /
`test_runnable_python_page`:

- a ``bash`` block: every command (a line, joined with the next while it ends in ``\\``, trailing ``# comment``
  removed) must exit 0. The commands run in a temporary folder that links the checkout's ``benchmarks``,
  ``examples``, ``scripts``, ``kernels`` and ``docs`` folders, with the environment's ``bin`` first on ``PATH``,
  so relative output folders (``runs/...``) never land in the checkout; the runnable blocks of one page run in
  order in one such folder, so a later command can read what an earlier one wrote. Keep runnable commands simple (no
  pipes, no ``$(...)``). ``<!-- runnable tiny: ARGS -->`` appends ``ARGS`` to every command of the block, so a
  long documented command runs in a tiny mode here (argparse takes an option's last value: ``--seq-len 64``
  after ``--seq-len 1000`` wins).
- a ``python`` block: executed in that folder too; the runnable blocks of one page run in order in one
  namespace, so a later block can use an earlier block's names.

Mark only commands that finish in seconds (with their tiny arguments): the whole module stays under 3 minutes
on 2 cores.

**Markup.** The API reference is written in the site's Markdown: no Sphinx/reST markup in docstrings or
rendered pages. mkdocstrings renders the docstrings as Markdown, so a Sphinx role (``:class:`SRU```) or a
``.. math::`` directive shows up as raw text on the site. ``scripts/mkdocs_hooks.py`` fails ``mkdocs build``
on such a page; these tests check that hook's detector and, without building the site, every docstring of the
package.

**Shapes.** Every public layer's ``forward`` and ``step`` has a docstring that names its tensor shapes.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import parrnn

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


# ---------------------------------------------------------------------------------------------- runnable blocks

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINKED_FOLDERS = ("benchmarks", "examples", "scripts", "kernels", "docs")
COMMAND_TIMEOUT_S = 150
_MARKER = re.compile(r"<!--\s*runnable(?:\s+tiny:\s*(?P<tiny>.*?))?\s*-->")
_FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    """One fenced block marked runnable: its file, line, language, code and the tiny-mode arguments."""

    path: Path
    line: int
    language: str
    code: str
    tiny: str = ""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def runnable_blocks(path: Path, text: str | None = None) -> list[Block]:
    """The blocks of a Markdown file marked ``<!-- runnable -->`` (or ``<!-- runnable tiny: ARGS -->``)."""
    text = path.read_text() if text is None else text
    blocks = []
    for fence in _FENCE.finditer(text):
        before = text[:fence.start()].rstrip().rsplit("\n", 1)[-1]
        marker = _MARKER.fullmatch(before.strip())
        if marker:
            line = text.count("\n", 0, fence.start()) + 1
            blocks.append(Block(path, line, fence.group(1), fence.group(2), (marker.group("tiny") or "").strip()))
    return blocks


def shell_commands(block: Block) -> list[str]:
    """The block's commands: continuation lines joined, comments dropped, the tiny arguments appended."""
    commands, current = [], ""
    for raw in block.code.splitlines():
        line = re.sub(r"(^|\s)#(\s.*|$)", "", raw).rstrip()  # a trailing "# comment" (not a '#' inside a word)
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        current += line.strip()
        if current.strip():
            commands.append(f"{current.strip()} {block.tiny}".strip())
        current = ""
    if current.strip():
        commands.append(f"{current.strip()} {block.tiny}".strip())
    return commands


ALL_BLOCKS = [block for path in DOC_FILES for block in runnable_blocks(path)]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.language in ("bash", "sh", "shell", "console")]
SHELL_PAGES = sorted({b.path for b in SHELL_BLOCKS})
PYTHON_PAGES = sorted({b.path for b in ALL_BLOCKS if b.language == "python"})


@pytest.fixture
def docs_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch folder that sees the checkout's folders the docs name, with the environment's tools on PATH."""
    for name in LINKED_FOLDERS:
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


@pytest.mark.parametrize("page", SHELL_PAGES, ids=[str(p.relative_to(ROOT)) for p in SHELL_PAGES])
def test_runnable_shell_page(page: Path, docs_workdir: Path) -> None:
    for block in (b for b in SHELL_BLOCKS if b.path == page):
        for command in shell_commands(block):
            proc = subprocess.run(["bash", "-c", command], cwd=docs_workdir, capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT_S)
            assert proc.returncode == 0, (f"{block.where}: `{command}` exited {proc.returncode}\n"
                                          f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}")


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=[str(p.relative_to(ROOT)) for p in PYTHON_PAGES])
def test_runnable_python_page(page: Path, docs_workdir: Path) -> None:
    namespace: dict = {"__name__": "__docs__"}
    for block in (b for b in ALL_BLOCKS if b.path == page and b.language == "python"):
        code = compile("\n" * (block.line) + block.code, str(page), "exec")  # tracebacks point at the page's lines
        exec(code, namespace)  # noqa: S102


def test_the_documented_gradflow_and_scan_commands_are_runnable() -> None:
    commands = [c for b in SHELL_BLOCKS for c in shell_commands(b)]
    assert any(c.startswith("parrnn-gradflow") for c in commands), commands
    assert any("benchmarks/scan_speed.py" in c for c in commands), commands
    first_gradflow = next(b for path in DOC_FILES for b in _all_bash_blocks(path) if "parrnn-gradflow" in b)
    assert any(first_gradflow == b.code for b in SHELL_BLOCKS), "the docs' first parrnn-gradflow block must be runnable"


def _all_bash_blocks(path: Path) -> list[str]:
    return [m.group(2) for m in _FENCE.finditer(path.read_text()) if m.group(1) in ("bash", "sh")]


def test_runnable_blocks_are_found_and_split(tmp_path: Path) -> None:  # the parser above must be able to fail
    page = tmp_path / "page.md"
    page.write_text("""
```bash
not-marked --a 1
```

<!-- runnable tiny: --steps 2 -->

```bash
tool --steps 100 --out runs/x \\
    --more 1        # a comment
other --flag#not-a-comment
```
<!-- runnable -->
```python
x = 1
```
""")
    blocks = runnable_blocks(page)
    assert [(b.language, b.line, b.tiny) for b in blocks] == [("bash", 8, "--steps 2"), ("python", 14, "")]
    assert shell_commands(blocks[0]) == ["tool --steps 100 --out runs/x --more 1 --steps 2",
                                         "other --flag#not-a-comment --steps 2"]


# ------------------------------------------------------------------------------------------ shapes in docstrings

#: Layers whose forward/step docstrings do not name their shapes yet (xfail, strict: remove a name once it does).
LAYERS_WITHOUT_DOCSTRINGS: set[str] = set()

_SHAPE = re.compile(r"\((?:L|N|T|B|batch|steps)\s*,|\(N,?\s*\)|\(N, ")
PUBLIC_LAYERS = sorted(name for name in parrnn.__all__ if isinstance(getattr(parrnn, name), type)
                       and issubclass(getattr(parrnn, name), torch.nn.Module))


def _shape_docstring_problems(cls: type) -> list[str]:
    problems = []
    for method in ("forward", "step"):
        fn = cls.__dict__.get(method) or getattr(cls, method, None)
        if fn is None or (method == "step" and fn is getattr(torch.nn.Module, "step", None)):
            continue
        doc = fn.__doc__ or ""
        if not doc.strip():
            problems.append(f"{cls.__name__}.{method} has no docstring")
        elif not _SHAPE.search(doc):
            problems.append(f"{cls.__name__}.{method}'s docstring names no shape such as (L, N, H_in) or (N, H)")
    return problems


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="forward/step docstrings without shapes yet"))
    if n in LAYERS_WITHOUT_DOCSTRINGS else n for n in PUBLIC_LAYERS])
def test_layer_forward_and_step_docstrings_name_shapes(name: str) -> None:
    problems = _shape_docstring_problems(getattr(parrnn, name))
    assert not problems, "\n".join(problems)


def test_shape_docstring_check_can_fail() -> None:
    class Bare(torch.nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN202
            return x

    class Vague(torch.nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN202
            """Run the layer."""
            return x

        def step(self, x):  # noqa: ANN001, ANN202
            """One step: `x` `(N, H_in)` -> `(N, H_out)`."""
            return x

    assert _shape_docstring_problems(Bare) == ["Bare.forward has no docstring"]
    assert len(_shape_docstring_problems(Vague)) == 1 and "Vague.forward" in _shape_docstring_problems(Vague)[0]


# ----------------------------------------------------------------------------------------- docs of the present

USER_DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
_PAST = re.compile(r"\bissues?\s*#?\d|\bissue's\b|(?<![\w&])#\d+\b|\bsessions?\b|to be filled|\bTODO\b", re.I)
_LINK = re.compile(r"\]\(([^)\s]+?)(?:#[^)]*)?\)")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code (code is API: `session.run` is not a session)."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))


def past_tense_lines(text: str) -> list[str]:
    """Prose lines that cite issue numbers or sessions, or hold placeholders or TODOs."""
    return [line for line in _prose(text).splitlines() if _PAST.search(line)]


def test_user_docs_name_no_issues_sessions_or_placeholders() -> None:
    found = [f"{p.relative_to(ROOT)}: {line.strip()[:100]}" for p in USER_DOCS
             for line in past_tense_lines(p.read_text())]
    assert not found, "write the present (move dated runs to docs/history.md):\n" + "\n".join(found)


def test_past_tense_check_can_fail() -> None:
    assert len(past_tense_lines("fixed in #12\nas issue 21 asked\nsession 1's run\n*To be filled in*\nTODO: x")) == 5
    assert past_tense_lines('```python\nsession = ort.InferenceSession("a")\n```\nrun `session.run`, see [x](#a)') == []


def test_relative_links_in_user_docs_resolve() -> None:
    missing = []
    for page in USER_DOCS:
        for target in _LINK.findall(_prose(page.read_text())):
            if "://" in target or target.startswith(("mailto:", "#")):
                continue
            if not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, "\n".join(missing)


def test_readme_links_the_install_page_first() -> None:
    text = (ROOT / "README.md").read_text()
    docs_list = text[text.index("## Documentation"):]
    first_link = _LINK.search(docs_list)
    assert first_link and first_link.group(1) == "docs/install.md", first_link


def test_every_page_is_in_the_nav_and_in_the_index() -> None:
    nav = (ROOT / "mkdocs.yml").read_text().split("\nnav:", 1)[1]
    index = (ROOT / "docs" / "index.md").read_text()
    next_steps = index[index.index("## Where to go next"):]
    pages = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.name != "index.md"]
    assert [p for p in pages if p not in nav] == [], "pages missing from mkdocs.yml's nav"
    assert [p for p in pages if f"({p})" not in next_steps and f"({p}#" not in next_steps] == [], \
        "pages missing from index.md's 'Where to go next'"


_PYPI_INSTALL = re.compile(r"pip install\s+[\"']?parrnn\b(?!\.)")


def test_no_doc_installs_parrnn_from_pypi() -> None:
    """parrnn is not on PyPI yet: every install line names a checkout (``".[onnx]"``) or a built wheel."""
    pages = [*USER_DOCS, ROOT / "docs" / "huggingface.md", *sorted((ROOT / "examples").glob("*.py"))]
    found = [f"{p.relative_to(ROOT)}: {line.strip()[:100]}" for p in pages if p.exists()
             for line in p.read_text().splitlines()
             if _PYPI_INSTALL.search(line) and "not on PyPI" not in line and "does not work" not in line]
    assert not found, "\n".join(found)
    assert _PYPI_INSTALL.search('pip install "parrnn[onnx]"') and not _PYPI_INSTALL.search('pip install ".[onnx]"')


def _api_reference_docstring_warnings() -> list[str]:
    """What griffe (mkdocstrings' parser) warns about in the docstrings the API reference renders: every
    ``::: name`` of docs/api/*.md and its public members. ``mkdocs build --strict`` fails on each of them."""
    griffe = pytest.importorskip("griffe")
    import logging

    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record.getMessage())

    handler, logger = Collect(level=logging.WARNING), logging.getLogger("griffe")
    logger.addHandler(handler)
    try:
        package = griffe.GriffeLoader(search_paths=[str(ROOT)], docstring_parser=griffe.Parser.google).load("parrnn")
        names = [m.group(1) for page in sorted((ROOT / "docs" / "api").glob("*.md"))
                 for m in re.finditer(r"^::: ([\w.]+)", page.read_text(), re.M)]
        seen: set[str] = set()

        def walk(obj, top: str) -> None:  # noqa: ANN001 - a griffe object
            if obj.path in seen:
                return
            seen.add(obj.path)
            if obj.docstring:
                obj.docstring.parse("google")
            if obj.is_module and obj.path != top:
                return
            for name, member in obj.members.items():
                if name.startswith("_") and not name.startswith("__"):
                    continue
                if member.is_alias:
                    try:
                        member = member.final_target
                    except Exception:  # noqa: BLE001 - an alias to something outside the package
                        continue
                walk(member, top)

        for name in names:
            walk(package[name.removeprefix("parrnn.")] if name != "parrnn" else package, name)
    finally:
        logger.removeHandler(handler)
    return sorted(set(found))


def test_api_reference_docstrings_parse_cleanly() -> None:
    found = _api_reference_docstring_warnings()
    assert not found, ("mkdocs build --strict would fail (Google-style Args: one `name: description` per "
                       "argument):\n" + "\n".join(found))
