"""MkDocs hook for the API reference: the docstrings' doctests (``>>>`` lines and the
output under them) become ``pycon`` code blocks, so Markdown neither reflows them nor reads
``x[0]["lr"]`` as a link. Named in mkdocs.yml (``hooks:``)."""

from __future__ import annotations

import re

from markdown import Extension
from markdown.preprocessors import Preprocessor

PROMPT = re.compile(r"^(\s*)>>> ")


class _Doctests(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        i, fenced = 0, False
        while i < len(lines):
            line = lines[i]
            if line.lstrip().startswith("```"):
                fenced = not fenced
            m = None if fenced else PROMPT.match(line)
            if m is None:
                out.append(line)
                i += 1
                continue
            indent = m.group(1)
            out.append(f"{indent}```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out.extend([f"{indent}```", ""])
        return out


class DoctestBlocks(Extension):
    def extendMarkdown(self, md):  # noqa: N802 - Markdown's API
        md.preprocessors.register(_Doctests(md), "onecycle_doctests", 28)


def on_config(config, **kwargs):
    config.markdown_extensions.append(DoctestBlocks())
    return config
