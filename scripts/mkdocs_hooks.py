"""mkdocs hooks: fail the docs build when a rendered page still shows Sphinx/reST markup literally.

The API reference is rendered by mkdocstrings from the docstrings, which must be written in the site's Markdown
(math as ``$...$`` / ``$$...$$``, cross-references as ``[SRU][parrnn.SRU]``). A Sphinx role such as
``:class:`SRU``` or a ``.. math::`` directive would otherwise appear as raw text on the site.
"""

from __future__ import annotations

import re

# A role's backtick becomes ``<code>`` once Markdown renders it (``:class:<code>SRU</code>``), so both forms match.
_LITERAL_MARKUP = re.compile(
    r":(?:class|func|meth|mod|attr|math|data|obj|exc|ref|doc|py:\w+):(?:`|<code>)"  # Sphinx roles
    r"|\.\. (?:math|code-block|note|warning|seealso|autoclass|autofunction)::"  # reST directives
    r"|\w::</p>"  # a reST literal-block marker ("Example::") ending a paragraph
)


def find_literal_markup(html: str) -> list[str]:
    """Every Sphinx role, reST directive or reST literal-block marker left in a rendered page, with context."""
    return [html[max(0, m.start() - 30):m.end() + 30].replace("\n", " ") for m in _LITERAL_MARKUP.finditer(html)]


def on_post_page(output: str, page, config) -> str:  # noqa: ANN001 - mkdocs' hook signature
    from mkdocs.exceptions import PluginError  # here, so tests import find_literal_markup without mkdocs

    found = find_literal_markup(output)
    if found:
        shown = "\n  ".join(found[:10])
        raise PluginError(f"{page.file.src_uri}: {len(found)} literal Sphinx/reST markup left "
                          f"(write docstrings in Markdown):\n  {shown}")
    return output
