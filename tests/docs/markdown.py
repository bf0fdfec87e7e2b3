"""Just enough Markdown for the docs' tests: fenced blocks, inline links and GitHub's heading anchors."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
# [text](target) and ![alt](target); the target ends at whitespace (a title may follow) or ")".
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\((?P<target><[^>]*>|[^\s)]+)(?:\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(?P<text>.*?)\s*#*\s*$")


@dataclass(frozen=True)
class Block:
    info: str  # the fence's info string, e.g. "sh"
    text: str
    line: int  # 1-based line of the opening fence


@dataclass(frozen=True)
class Link:
    target: str
    line: int


def _split(markdown: str) -> tuple[list[Block], list[tuple[int, str]]]:
    """Fenced blocks, and the other lines (numbered) outside them."""
    blocks: list[Block] = []
    prose: list[tuple[int, str]] = []
    fence: str | None = None
    info, start, body = "", 0, []
    for number, line in enumerate(markdown.splitlines(), 1):
        if fence is None:
            match = _FENCE.match(line)
            if match:
                fence, info, start, body = match["fence"], match["info"].strip(), number, []
            else:
                prose.append((number, line))
        elif line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            blocks.append(Block(info, "\n".join(body) + "\n", start))
            fence = None
        else:
            body.append(line)
    if fence is not None:
        raise ValueError(f"line {start}: a fenced block is never closed")
    return blocks, prose


def blocks(markdown: str) -> list[Block]:
    return _split(markdown)[0]


def links(markdown: str) -> list[Link]:
    """Every inline link and image outside code."""
    found = []
    for number, line in _split(markdown)[1]:
        for match in _LINK.finditer(_CODE_SPAN.sub("", line)):
            found.append(Link(match["target"].strip("<>"), number))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: Counter[str] = Counter()
    found = set()
    for _, line in _split(markdown)[1]:
        match = _HEADING.match(line)
        if match:
            base = slug(match["text"])
            found.add(f"{base}-{seen[base]}" if seen[base] else base)
            seen[base] += 1
    return found


def broken_links(path: Path, root: Path) -> list[str]:
    """What is wrong with ``path``'s relative links, one line each (empty when all resolve)."""
    problems = []
    for link in links(path.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link.target):  # http:, https:, mailto: are not ours
            continue
        file_part, _, fragment = link.target.partition("#")
        target = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{link.line}: {link.target}"
        if not target.is_relative_to(root):
            problems.append(f"{where}: outside the repository")
        elif not target.exists():
            problems.append(f"{where}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target.read_text()):
            problems.append(f"{where}: no heading #{fragment} in {target.relative_to(root)}")
        elif fragment and target.suffix != ".md":
            problems.append(f"{where}: a #fragment on a file that has no headings")
    return problems
