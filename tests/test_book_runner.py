"""The chapter runner names the failing chapter and cell and exits non-zero."""

from pathlib import Path

import pytest

from hesslab import book
from hesslab.profiles import parameters_for

CHAPTER = """---
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

# A chapter that fails

```{code-cell} ipython3
:tags: [parameters]

profile = "cpu"
```

```{code-cell} ipython3
x = 1
```

```{code-cell} ipython3
raise ValueError(f"broken at profile {profile}")
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
