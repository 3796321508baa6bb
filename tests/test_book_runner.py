"""The chapter runner names the failing chapter and cell and exits non-zero; stored
paper-profile chapters: a ``paper`` run stores each chapter with its provenance, a ``cpu``
run reuses a current stored chapter instead of executing it, and a stale or unreadable one
is executed afresh (a toy book in a temporary folder stands in for the real one: the paper
profile needs a GPU)."""

import json
from pathlib import Path

import nbformat

import pytest

from hesslab import book
from hesslab.profiles import parameters_for

HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

"""
PARAMETERS = """```{code-cell} ipython3
:tags: [parameters]

profile = "cpu"
```
"""
CHAPTER = HEADER + "# A chapter that fails\n\n" + PARAMETERS + """
```{code-cell} ipython3
x = 1
```

```{code-cell} ipython3
raise ValueError(f"broken at profile {profile}")
```
"""
#: a chapter that prints the profile it ran at
TOY = HEADER + "# Toy\n\n" + PARAMETERS + """
```{code-cell} ipython3
print(f"executed at {profile}")
```
"""


def make_book(root: Path) -> Path:
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "broken.md").write_text(CHAPTER)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/broken\n")
    return root


def test_failing_chapter_is_named_with_its_cell(tmp_path, capsys):
    root = make_book(tmp_path / "src")
    code = book.main(["run", "--profile", "smoke", "--out", str(tmp_path / "out")], root=root)
    assert code == 1
    err = capsys.readouterr().err
    assert "chapter 'broken' failed at cell" in err and "ValueError: broken at profile smoke" in err
    summary = (tmp_path / "out" / "executed" / "summary.json").read_text()
    assert '"ok": false' in summary


def test_unknown_chapter_and_profile_are_refused(tmp_path):
    root = make_book(tmp_path / "src")
    with pytest.raises(ValueError, match="no chapter named"):
        book.run("smoke", only=["nope"], out=tmp_path / "out", root=root)
    with pytest.raises(ValueError, match="unknown profile"):
        parameters_for("broken", "laptop")


def test_build_refuses_unexecuted_chapters(tmp_path):
    root = make_book(tmp_path / "src")
    with pytest.raises(FileNotFoundError, match="have not been executed"):
        book.build(tmp_path / "out", root)


@pytest.fixture
def toy_root(tmp_path):
    root = tmp_path / "toy"
    (root / "notebooks").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: notebooks/toy\n")
    (root / "notebooks" / "toy.md").write_text(TOY)
    return root


def _printed(notebook):
    nb = nbformat.read(notebook, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_paper_run_is_stored_and_reused_by_cpu_until_the_source_changes(toy_root, tmp_path):
    [paper] = book.run("paper", out=tmp_path / "paper", root=toy_root)
    assert paper.ok and paper.stored is None
    record = json.loads((book.stored_dir(toy_root) / "toy.json").read_text())
    assert record["profile"] == "paper" and record["parameters"] == {"profile": "paper"}
    assert {"device", "torch", "git_revision"} <= set(record["environment"])
    stored_nb = nbformat.read(book.stored_dir(toy_root) / "toy.ipynb", as_version=4)
    assert "stored-run-note" in stored_nb.cells[1].metadata["tags"]
    assert "executed at paper" in _printed(book.stored_dir(toy_root) / "toy.ipynb")

    [reused] = book.run("cpu", out=tmp_path / "cpu", root=toy_root)
    assert reused.ok and reused.stored and reused.profile == "paper"
    assert "executed at paper" in _printed(tmp_path / "cpu" / "executed" / "toy.ipynb")
    summary = json.loads((tmp_path / "cpu" / "executed" / "summary.json").read_text())
    assert summary["toy"]["stored"] and "(stored run)" in book._statistics_page(summary)

    [forced] = book.run("cpu", out=tmp_path / "forced", root=toy_root, use_stored=False)
    assert forced.stored is None and "executed at cpu" in _printed(tmp_path / "forced" / "executed" / "toy.ipynb")

    [smoke] = book.run("smoke", out=tmp_path / "smoke", root=toy_root)
    assert smoke.stored is None, "the smoke profile (CI) must always execute"

    (toy_root / "notebooks" / "toy.md").write_text(TOY + "\nA changed chapter.\n")
    [stale] = book.run("cpu", out=tmp_path / "stale", root=toy_root)
    assert stale.stored is None and stale.profile == "cpu"
    assert "executed at cpu" in _printed(tmp_path / "stale" / "executed" / "toy.ipynb")


def test_unreadable_record_is_ignored_and_failed_runs_are_not_stored(toy_root, tmp_path):
    folder = book.stored_dir(toy_root)
    folder.mkdir(parents=True)
    (folder / "toy.json").write_text("{not json")
    (folder / "toy.ipynb").write_text("{}")
    [result] = book.run("cpu", out=tmp_path / "cpu", root=toy_root)
    assert result.ok and result.stored is None
    with pytest.raises(ValueError, match="only successful runs are stored"):
        book.store_chapter(book.ChapterRun("toy", "paper", 1.0, False, "boom"), tmp_path, toy_root)
