"""Every link in README.md and docs/*.md resolves: a relative link names a file of this repository (and, with
`#anchor`, a heading or id of that Markdown file, as GitHub makes them); an absolute URL has the shape of one.
No network: web addresses are checked for shape only."""
from __future__ import annotations

import pathlib
import re
import sys
import unicodedata
from urllib.parse import unquote, urlsplit

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
# [text](target) and ![alt](target), the target up to a space (a title may follow) or the closing bracket.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^\s<>()]*(?:\([^\s()]*\)[^\s<>()]*)*)>?"
                         r"(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
BARE_URL = re.compile(r"(?<![(<\w])https?://[^\s)<>`|]+")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
HTML_ID = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def prose(text: str) -> str:
    """The text a reader sees as prose: fenced code blocks and code spans removed (their links are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    body = prose(text)
    return INLINE_LINK.findall(body) + REFERENCE_DEFINITION.findall(body)


def bare_urls(text: str) -> list[str]:
    body = INLINE_LINK.sub("", prose(text))
    return [url.rstrip(".,;:!?'\"*_") for url in BARE_URL.findall(body)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text (code marks, emphasis and link targets dropped),
    lower case, punctuation removed except '-' and '_', each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text).strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown page has on GitHub: one per heading (repeats get -1, -2, ...) and HTML ids."""
    found, seen = set(), {}
    for _, heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found | set(HTML_ID.findall(text))


def url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r} (http or https expected)"
    host = parts.hostname or ""
    if "." not in host and host != "localhost" or any(c.isspace() for c in url):
        return "not a web address"
    return None


def link_problem(page: pathlib.Path, target: str) -> str | None:
    """Why `target`, linked from `page`, does not resolve; None when it does."""
    if target.startswith("mailto:"):
        return None if "@" in target else "a mail link without an address"
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
        return url_problem(target)
    path, _, anchor = unquote(target).partition("#")
    if path.startswith("/"):
        return "an absolute path: GitHub resolves it against the site, not the repository; use a relative one"
    resolved = (page.parent / path).resolve() if path else page
    if ROOT not in resolved.parents and resolved != ROOT:
        return "outside the repository"
    if not resolved.exists():
        return "no such file in the repository"
    if anchor:
        if resolved.suffix != ".md":
            return f"an anchor into {resolved.name}, which is not a Markdown page"
        if anchor not in anchors(resolved.read_text(encoding="utf-8")):
            return f"{resolved.relative_to(ROOT)} has no heading or id for #{anchor}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    text = page.read_text(encoding="utf-8")
    broken = [f"{target}: {problem}" for target in links(text) if (problem := link_problem(page, target))]
    broken += [f"{url}: {problem}" for url in bare_urls(text) if (problem := url_problem(url))]
    assert not broken, f"{page.relative_to(ROOT)} has links that do not resolve:\n" + "\n".join(broken)


def test_docs_pages_are_reachable_from_the_readme():
    """A page in docs/ that nothing links to is one no reader finds."""
    readme = ROOT / "README.md"
    linked = {(readme.parent / unquote(t).partition("#")[0]).resolve() for t in links(readme.read_text())}
    orphans = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link to: {orphans}"


# --- the checker itself ------------------------------------------------------------------------------------------

def test_slugs_are_githubs():
    assert slug("Load PuLID-FLUX Model (`FaceMigration_PulidModelLoader`)") == \
        "load-pulid-flux-model-facemigration_pulidmodelloader"
    assert slug("The command: `python -m face_migration generate`") == "the-command-python--m-face_migration-generate"
    assert slug("Parameters, in short") == "parameters-in-short"
    assert slug("**Bold** and [a link](x.md)") == "bold-and-a-link"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n<a id=\"here\"></a>") == {"a", "a-1", "here"}


def test_checker_finds_broken_links(tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "README.md").write_text("# Top\n## Models\n")
    page = docs / "page.md"
    page.write_text("# Page\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert link_problem(page, "../README.md#models") is None
    assert link_problem(page, "#page") is None
    assert "no such file" in link_problem(page, "missing.md")
    assert "no heading" in link_problem(page, "../README.md#tests")
    assert "outside" in link_problem(page, "../../elsewhere.md")
    assert "absolute path" in link_problem(page, "/docs/page.md")
    assert "scheme" in link_problem(page, "ftp://example.org/x")
    assert "not a web address" in url_problem("https://nohost/x")
    assert url_problem("https://huggingface.co/guozinan/PuLID/resolve/main/pulid_flux_v0.9.1.safetensors") is None


def test_links_in_code_are_not_links():
    text = "See [a](a.md) and `[b](b.md)`.\n```\n[c](c.md) https://in.code/x\n```\n![d](d.jpg) https://e.org/x."
    assert links(text) == ["a.md", "d.jpg"]
    assert bare_urls(text) == ["https://e.org/x"]
