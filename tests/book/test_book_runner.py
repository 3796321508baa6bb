"""The chapter runner names the failing chapter and cell and exits non-zero; every cell and
every chapter runs under a time limit (a cell past its limit, a chapter past its limit, a
dead kernel and a hung worker each fail the chapter, fast, with the chapter and cell named,
and leave no kernel running); stored paper-profile chapters: a ``paper`` run stores each
chapter with its provenance, a ``cpu`` run reuses a current stored chapter instead of
executing it, and a stale or unreadable one is executed afresh (a toy book in a temporary
folder stands in for the real one: the paper profile needs a GPU)."""

import json
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat

import pytest

from hesslab.book import runner as book
from hesslab.experiments.profiles import PROFILES, TIME_LIMITS, parameters_for, time_limits

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


# --- time limits ------------------------------------------------------------------------


def make_chapter(root: Path, name: str, *cells: str) -> Path:
    """A one-chapter toy book whose chapter ``name`` has a parameters cell and then ``cells``."""
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    body = "".join(f"\n```{{code-cell}} ipython3\n{cell}\n```\n" for cell in cells)
    (root / "notebooks" / f"{name}.md").write_text(HEADER + f"# {name}\n\n" + PARAMETERS + body)
    (root / "_toc.yml").write_text(f"format: jb-book\nroot: intro\nchapters:\n- file: notebooks/{name}\n")
    return root


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc").is_dir():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone_soon(pid: int, seconds: float = 0.3) -> bool:
    """Whether ``pid`` stops running within ``seconds`` (short: an orphaned kernel would exit by itself
    about a second after its parent, which must not pass for the runner's clean-up)."""
    deadline = time.monotonic() + seconds
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


#: a cell that records its kernel's pid in the chapter's folder (the kernel's working directory)
RECORD_PID = 'import os, time\nopen("kernel.pid", "w").write(str(os.getpid()))'


def test_every_profile_has_time_limits_and_overrides_apply():
    assert set(TIME_LIMITS) == set(PROFILES)
    for profile in PROFILES:
        limits = time_limits(profile)
        assert 0 < limits.cell <= limits.chapter
    assert time_limits("smoke").chapter <= 15 * 60, "a hung smoke chapter must fail well inside a CI job"
    assert time_limits("smoke", cell=2) == book.TimeLimits(cell=2, chapter=TIME_LIMITS["smoke"].chapter)
    with pytest.raises(ValueError, match="positive"):
        time_limits("smoke", cell=0)


def test_cell_past_the_cell_limit_fails_fast_naming_chapter_and_cell(tmp_path, capsys):
    root = make_chapter(tmp_path / "src", "slow", RECORD_PID, "time.sleep(120)")
    start = time.monotonic()
    code = book.main(["run", "--profile", "smoke", "--out", str(tmp_path / "out"), "--cell-timeout", "2"], root=root)
    elapsed = time.monotonic() - start
    assert code == 1
    assert elapsed < 30, f"a 2 s cell limit took {elapsed:.0f} s to fail"
    err = capsys.readouterr().err
    assert "chapter 'slow' failed at cell 3 (`time.sleep(120)`)" in err
    assert "cell limit of 2 s (smoke profile)" in err and "--cell-timeout" in err
    executed = tmp_path / "out" / "executed"
    summary = json.loads((executed / "summary.json").read_text())["slow"]
    assert summary["ok"] is False and summary["failure"] == "cell-timeout" and summary["failed_cell"] == 3
    assert not (executed / "slow.ipynb").exists(), "a timed-out chapter must not look like a good result"
    partial = nbformat.read(executed / "failed" / "slow.ipynb", as_version=4)
    assert partial.cells[-1].source == "time.sleep(120)"
    kernel = int((root / "notebooks" / "kernel.pid").read_text())
    assert _gone_soon(kernel), f"the timed-out kernel {kernel} is still running"


def test_chapter_past_the_chapter_limit_fails(tmp_path):
    root = make_chapter(tmp_path / "src", "long", RECORD_PID, *["time.sleep(1)"] * 12)
    limits = book.TimeLimits(cell=60, chapter=5)
    start = time.monotonic()
    result = book.execute_chapter("long", "smoke", tmp_path / "out", root, limits)
    elapsed = time.monotonic() - start
    assert not result.ok and result.failure == "chapter-timeout"
    assert elapsed < 30, f"a 5 s chapter limit took {elapsed:.0f} s to fail"
    assert result.failed_cell is not None and "chapter limit of 5 s" in result.error
    assert "--chapter-timeout" in result.error
    assert not (tmp_path / "out" / "long.ipynb").exists()
    assert _gone_soon(int((root / "notebooks" / "kernel.pid").read_text()))


def test_dead_kernel_is_reported_with_its_cell(tmp_path):
    root = make_chapter(tmp_path / "src", "dies", "x = 1", "import os\nos._exit(1)")
    start = time.monotonic()
    result = book.execute_chapter("dies", "smoke", tmp_path / "out", root)
    assert time.monotonic() - start < 30
    assert not result.ok and result.failure == "dead-kernel"
    assert result.failed_cell == 3 and result.failed_source == "import os"
    assert "the kernel died" in result.error
    assert result.describe().startswith("chapter 'dies' failed at cell 3 (`import os`): the kernel died")


FAKE_WORKER = """
import json, os, subprocess, sys, time
spec = json.load(open(sys.argv[1]))
kernel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
open(os.environ["FAKE_KERNEL_PID"], "w").write(str(kernel.pid))
json.dump({"kernel_pid": kernel.pid, "kernel_pgid": kernel.pid,
           "cell": {"index": 2, "number": 2, "source": "hang_outside_nbclient()"}}, open(spec["status"], "w"))
time.sleep(600)
"""


def test_overrunning_worker_is_killed_with_its_kernel(tmp_path, monkeypatch):
    """The last line of defence: a worker stuck where its own limits cannot reach is killed."""
    root = make_chapter(tmp_path / "src", "stuck", "x = 1")
    fake = tmp_path / "fake_worker.py"
    fake.write_text(FAKE_WORKER)
    pid_file = tmp_path / "fake_kernel.pid"
    monkeypatch.setenv("FAKE_KERNEL_PID", str(pid_file))
    monkeypatch.setattr(book, "_worker_command", lambda spec: [sys.executable, str(fake), str(spec)])
    monkeypatch.setattr(book, "KILL_GRACE", 1.0)
    start = time.monotonic()
    result = book.execute_chapter("stuck", "smoke", tmp_path / "out", root, book.TimeLimits(cell=1, chapter=1))
    assert time.monotonic() - start < 15
    assert not result.ok and result.failure == "chapter-timeout" and "killed" in result.error
    assert result.failed_cell == 2 and result.failed_source == "hang_outside_nbclient()"
    assert _gone_soon(int(pid_file.read_text())), "the stuck worker's kernel is still running"


def test_failed_chapter_blocks_the_build_until_it_succeeds(tmp_path):
    root = make_chapter(tmp_path / "src", "flaky", "raise RuntimeError('not yet')")
    [failed] = book.run("smoke", out=tmp_path / "out", root=root)
    executed = tmp_path / "out" / "executed"
    assert not failed.ok and (executed / "failed" / "flaky.ipynb").exists()
    with pytest.raises(FileNotFoundError, match="failed in their last run"):
        book.build(tmp_path / "out", root)
    make_chapter(root, "flaky", "print('fine now')")
    [fixed] = book.run("smoke", out=tmp_path / "out", root=root)
    assert fixed.ok and (executed / "flaky.ipynb").exists()
    assert not (executed / "failed" / "flaky.ipynb").exists()
    assert "fine now" in _printed(executed / "flaky.ipynb")


#: an Output widget that a cell fills by capture (what the chapters did before hesslab.book.interactive),
#: then a cell that reports what the kernel was told about its contents
CAPTURE = '''import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display

output = widgets.Output()
output.clear_output(wait=True)
with output:
    plt.plot([1, 2, 3])
    plt.show()
display(widgets.VBox([output]))'''
REPORT = 'print(f"the kernel was sent {len(output.outputs)} outputs")'


def test_runner_records_captured_widget_output_without_messaging_the_kernel(tmp_path):
    """nbclient's Output mimic sends captured output to the kernel on the shell socket during the
    cell, which can lose the cell's reply; the runner's records it but sends nothing."""
    import papermill as pm

    root = make_chapter(tmp_path / "src", "capture", CAPTURE, REPORT)
    stock = tmp_path / "stock.ipynb"
    jupytext.write(jupytext.read(root / "notebooks" / "capture.md"), tmp_path / "in.ipynb")
    pm.execute_notebook(str(tmp_path / "in.ipynb"), str(stock), kernel_name="python3", progress_bar=False,
                        execution_timeout=60)
    assert "the kernel was sent 1 outputs" in _printed(stock), "stock nbclient no longer messages the kernel?"

    result = book.execute_chapter("capture", "smoke", tmp_path / "out", root)
    assert result.ok, result.error
    executed = tmp_path / "out" / "capture.ipynb"
    assert "the kernel was sent 0 outputs" in _printed(executed)
    nb = nbformat.read(executed, as_version=4)
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    [captured] = [w["state"]["outputs"] for w in state.values() if w["model_name"] == "OutputModel"]
    assert [sorted(o["data"]) for o in captured] == [["image/png", "text/plain"]], \
        "the captured figure must still be in the widget's saved state (the HTML book shows it)"


# --- parameters on the command line (-p NAME VALUE, as papermill's) -------------------------

#: a chapter with parameters of several types, printing them
KNOBS = HEADER + "# Knobs\n\n" + """```{code-cell} ipython3
:tags: [parameters]

profile = "cpu"
seed = 0
lr = 0.5
seeds = [0, 1]
title = "toy"
```

```{code-cell} ipython3
print(f"executed at {profile}: seed={seed!r} lr={lr!r} seeds={seeds!r} title={title!r}")
```
"""


@pytest.fixture
def knobs_root(toy_root):
    """The toy book (chapter ``toy``: only ``profile``) with a second chapter ``knobs``."""
    (toy_root / "notebooks" / "knobs.md").write_text(KNOBS)
    (toy_root / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: notebooks/toy\n"
                                       "- file: notebooks/knobs\n")
    return toy_root


def test_parameter_values_are_read_as_papermill_reads_them():
    from papermill.cli import _resolve_type

    for text in ["3", "-2", "1_000", " 7", "3.5", "1e3", "nan", "-inf", "True", "False", "None", "true", "none",
                 "[0, 1]", "abc", ""]:
        ours, theirs = book.parameter_value(text), _resolve_type(text)
        assert type(ours) is type(theirs) or isinstance(ours, book.ParameterText) and type(theirs) is str, text
        assert ours == theirs or ours != ours and theirs != theirs, text  # nan


def test_overrides_reach_the_chapter_and_are_recorded(knobs_root, tmp_path, capsys):
    out = tmp_path / "out"
    code = book.main(["run", "--profile", "smoke", "--only", "knobs", "--out", str(out), "-p", "seed", "3",
                      "--parameter", "lr", "1", "-p", "seeds", "[4, 5]", "-r", "title", "7"], root=knobs_root)
    assert code == 0
    printed = _printed(out / "executed" / "knobs.ipynb")
    assert "executed at smoke: seed=3 lr=1 seeds=[4, 5] title='7'" in printed
    assert "with seed=3, lr=1, seeds=[4, 5], title='7'" in capsys.readouterr().out
    summary = json.loads((out / "executed" / "summary.json").read_text())
    assert summary["knobs"]["overrides"] == {"seed": 3, "lr": 1, "seeds": [4, 5], "title": "7"}
    page = book._statistics_page(summary)
    assert "non-default parameters: `seed = 3`, `lr = 1`, `seeds = [4, 5]`, `title = '7'`" in page


@pytest.mark.parametrize("argv, message", [
    (["-p", "nope", "1"], "'nope' is not a parameter of chapters 'toy', 'knobs'\n  toy's parameters: none but profile\n"
                          "  knobs's parameters: seed, lr, seeds, title"),
    (["-p", "seed", "3"], "'seed' is not a parameter of chapter 'toy'\n  toy's parameters: none but profile\n"
                          "  it is a parameter of knobs only: run those with --only knobs"),
    (["--only", "knobs", "-p", "seed", "1.5"], "parameter 'seed' of chapter 'knobs' must be an int like its "
                                               "default 0, not 1.5 (float)"),
    (["--only", "knobs", "-p", "seed", "True"], "must be an int like its default 0, not True (bool)"),
    (["--only", "knobs", "-r", "seed", "3"], "must be an int like its default 0, not '3' (str)"),
    (["--only", "knobs", "-p", "lr", "fast"], "must be a float (or an int) like its default 0.5, not 'fast' (str)"),
    (["--only", "knobs", "-p", "seeds", "3"], "parameter 'seeds' of chapter 'knobs' must be a list like its default "
                                              "[0, 1]: 3 is not a list; give it as a Python literal, "
                                              "e.g. -p seeds \"[0, 1]\""),
    (["--only", "knobs", "-p", "seeds", "[0, 0.5]"], "its items must be ints, not 0.5"),
    (["--only", "knobs", "-p", "title", "3"], "must be a string like its default 'toy', not 3 (int); papermill's -p "
                                              "reads True, False, None and numbers as such, -r title VALUE passes "
                                              "VALUE as a string"),
    (["-p", "profile", "paper"], "'profile' is chosen with --profile"),
])
def test_refused_parameters_exit_2_before_anything_runs(knobs_root, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert book.main(["run", "--profile", "smoke", "--out", str(out), *argv], root=knobs_root) == 2
    err = capsys.readouterr().err
    assert err.startswith("parameters given with -p/-r:\n") and message in err, err
    assert not out.exists(), "nothing may run before the parameters are checked"


def test_a_run_with_overrides_neither_reuses_nor_stores_stored_chapters(knobs_root, tmp_path, capsys):
    [paper] = book.run("paper", only=["knobs"], out=tmp_path / "paper", root=knobs_root, overrides={"seed": 3})
    assert paper.ok and paper.overrides == {"seed": 3}
    assert "neither reused nor stored" in capsys.readouterr().out
    assert not (book.stored_dir(knobs_root) / "knobs.json").exists(), "a run with overrides was stored"
    with pytest.raises(ValueError, match="only runs with the default parameters are stored"):
        book.store_chapter(paper, tmp_path / "paper" / "executed", knobs_root)

    # a stored record as a default paper run leaves it (its notebook: the run above's)
    default = book.ChapterRun("knobs", "paper", paper.seconds, True)
    book.store_chapter(default, tmp_path / "paper" / "executed", knobs_root)
    [reused] = book.run("cpu", only=["knobs"], out=tmp_path / "cpu", root=knobs_root)
    assert reused.stored, "the record must be current (else this test proves nothing)"
    [fresh] = book.run("cpu", only=["knobs"], out=tmp_path / "fresh", root=knobs_root,
                       overrides={"seeds": (7,), "lr": 2})
    assert fresh.ok and fresh.stored is None and fresh.profile == "cpu"
    assert fresh.overrides == {"seeds": [7], "lr": 2}
    assert "executed at cpu: seed=0 lr=2 seeds=[7]" in _printed(tmp_path / "fresh" / "executed" / "knobs.ipynb")
