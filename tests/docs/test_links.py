"""Every relative link in the README and docs/ resolves: the file exists, and so does the #heading."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.markdown import anchors, broken_links, links, slug

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page, ROOT) == []


def test_the_readme_links_the_index_and_every_main_page() -> None:
    targets = {link.target.partition("#")[0] for link in links((ROOT / "README.md").read_text())}
    main = {"docs/README.md", "docs/architecture.md", "docs/wire-format.md", "docs/api.md"}
    main |= {"docs/configuration.md", "docs/operations.md", "docs/clients.md", "docs/performance.md"}
    main |= {"docs/benchmarks/results.md", "docs/benchmarks/history.md", "docs/development.md"}
    assert sorted(main - targets) == []


def test_the_index_lists_every_page_under_docs() -> None:
    index = ROOT / "docs" / "README.md"
    listed = {(index.parent / link.target.partition("#")[0]).resolve() for link in links(index.read_text())}
    pages = {page.resolve() for page in PAGES if page.parent != ROOT and page != index}
    assert sorted(str(page.relative_to(ROOT)) for page in pages - listed) == []


def test_the_readme_is_a_front_door() -> None:
    assert len((ROOT / "README.md").read_bytes()) <= 12 * 1024


def test_anchors_are_githubs() -> None:
    assert slug("Browser: `ssegate.js`") == "browser-ssegatejs"
    assert slug("Health, metrics, shutdown, logs") == "health-metrics-shutdown-logs"
    assert slug("W4 over Redis: N=150") == "w4-over-redis-n150"
    assert slug("`ssegate serve`") == "ssegate-serve"
    assert anchors("# Topics\n## Topics\n```sh\n# not a heading\n```\n") == {"topics", "topics-1"}


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[fine](other.md#a-section) [gone](missing.md) [no heading](other.md#nothing)\n"
        "[self](#top) `[in code](missing.md)` [web](https://example.com/x.md)\n\n# Top\n"
        "```sh\n[in a block](missing.md)\n```\n"
    )
    assert broken_links(page, tmp_path) == [
        "page.md:1: missing.md: no such file",
        "page.md:1: other.md#nothing: no heading #nothing in other.md",
    ]
