"""The API reference page (book/api.md) against the package it documents.

Asserted, all read from the sources so that nothing here can drift:

- every name of ``hesslab.__all__`` (but ``__version__``) has exactly one autodoc directive on
  the page, in the order of ``__all__``, and nothing outside ``__all__`` has one;
- each directive lies in the section titled by its group's comment in ``__all__``
  (``hesslab/__init__.py``), so the sections follow the groups;
- the page's Python example runs in a fresh interpreter and prints the output the page shows
  after it (numbers within one unit of their last printed digit).

That the built book renders these entries is asserted in ``test_book.py`` (one build).
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hesslab

pytestmark = pytest.mark.book
ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "book" / "api.md"
DIRECTIVE = re.compile(r"^\s*\.\. auto(?:class|function|exception|data)::\s+hesslab\.(\w+)\s*$")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _groups() -> list[tuple[str, list[str]]]:
    """``(comment, names)`` of each comment-headed group of ``__all__`` in ``hesslab/__init__.py``."""
    source = (ROOT / "hesslab" / "__init__.py").read_text()
    body = re.search(r"^__all__ = \[\n(.*?)^\]", source, re.S | re.M).group(1)
    groups: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("#"):
            groups.append((line.lstrip("# "), []))
        elif line:
            assert groups, f"{line!r} in __all__ comes before any group comment"
            groups[-1][1].append(ast.literal_eval(line.rstrip(",")))
    return groups


def _page() -> list[tuple[str, str | None, str]]:
    """The page as ``(kind, info, text)`` items: ``("heading", None, title)`` for ``##``
    headings and ``("fence", info string, content)`` for fenced blocks, in page order."""
    items, fence, lines = [], None, []
    for line in PAGE.read_text().splitlines():
        if fence is None and line.startswith("```"):
            fence, lines = line[3:].strip(), []
        elif fence is not None and line.startswith("```"):
            items.append(("fence", fence, "\n".join(lines) + "\n"))
            fence = None
        elif fence is not None:
            lines.append(line)
        elif line.startswith("## "):
            items.append(("heading", None, line[3:].strip()))
    assert fence is None, "book/api.md ends inside a fenced block"
    return items


def _directives() -> list[tuple[str, str]]:
    """``(section title, name)`` of every autodoc directive of the page, in page order."""
    found, section = [], None
    for kind, info, text in _page():
        if kind == "heading":
            section = text
        elif info == "{eval-rst}":
            found += [(section, m.group(1)) for m in map(DIRECTIVE.match, text.splitlines()) if m]
    return found


def test_the_groups_are_read_from_the_source():
    """The parser above sees all of ``__all__``, in order, so the checks below cover it."""
    groups = _groups()
    assert len(groups) >= 7
    assert [name for _, names in groups for name in names] == list(hesslab.__all__)


def test_every_public_name_is_documented_once_in_the_order_of_all():
    public = [name for name in hesslab.__all__ if name != "__version__"]
    documented = [name for _, name in _directives()]
    assert sorted(documented) == sorted(set(documented)), "a name is documented twice"
    assert set(public) - set(documented) == set(), "names of hesslab.__all__ missing from book/api.md"
    assert set(documented) - set(public) == set(), "book/api.md documents names outside hesslab.__all__"
    assert documented == public, "book/api.md lists the names in another order than hesslab.__all__"


def test_sections_follow_the_groups_of_all():
    group_of = {name: comment for comment, names in _groups() for name in names}
    for section, name in _directives():
        group = group_of.get(name, "(not in __all__)")
        assert section is not None and section.casefold() == group.casefold(), \
            f"{name} is under the section {section!r}, its group in __all__ is {group!r}"
    sections = [text for kind, _, text in _page() if kind == "heading"]
    expected = [comment for comment, names in _groups() if set(names) - {"__version__"}]
    assert [s.casefold() for s in sections if s.casefold() in {c.casefold() for c in expected}] == \
        [c.casefold() for c in expected]


def _examples() -> list[tuple[str, str | None]]:
    """``(code, shown output or None)`` of every ``python`` block; the output is a ``text``
    block that follows it before any other block or heading."""
    items, out = _page(), []
    for i, (kind, info, text) in enumerate(items):
        if info == "python":
            after = items[i + 1] if i + 1 < len(items) else (None, None, None)
            out.append((text, after[2] if after[1] == "text" else None))
    return out


def _same_output(printed: str, shown: str) -> bool:
    """Equal text; numbers within one unit of the last digit the page shows."""
    if NUMBER.split(printed) != NUMBER.split(shown):
        return False
    for got, want in zip(NUMBER.findall(printed), NUMBER.findall(shown)):
        decimals = len(want.partition(".")[2])
        if abs(float(got) - float(want)) > (10.0 ** -decimals if decimals else 0):
            return False
    return True


def test_the_comparison_of_outputs_can_fail():
    assert _same_output("λ ≈ 0.5800, 195 entries\n", "λ ≈ 0.5799, 195 entries\n")
    assert not _same_output("λ ≈ 0.5820, 195 entries\n", "λ ≈ 0.5799, 195 entries\n")
    assert not _same_output("λ ≈ 0.5799, 196 entries\n", "λ ≈ 0.5799, 195 entries\n")
    assert not _same_output("λ = 0.5799, 195 entries\n", "λ ≈ 0.5799, 195 entries\n")


def test_the_example_runs_and_prints_what_the_page_shows(tmp_path):
    examples = _examples()
    assert examples, "book/api.md has no python example"
    code = "".join(c for c, _ in examples)
    for name in ("HessianOperator", "slq", "blockwise_slq", "js0", "top_eigenvalues"):
        assert f"hesslab.{name}(" in code, f"the example does not show hesslab.{name}"
    for code, shown in examples:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                cwd=tmp_path, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        if shown is not None:
            assert _same_output(result.stdout, shown), \
                f"the example prints\n{result.stdout}\nbut the page shows\n{shown}"
