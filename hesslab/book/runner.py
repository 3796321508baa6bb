"""Run the book's chapters with papermill and build the HTML with jupyter-book.

    python -m hesslab.book run --profile smoke|cpu|paper [--only NAME ...] [--out DIR] [--no-stored]
                               [-p NAME VALUE ...] [-r NAME VALUE ...]
                               [--cell-timeout SECONDS] [--chapter-timeout SECONDS]
    python -m hesslab.book run --profile paper --dry-run [--calibration-examples N] [--lanczos STEPS PROBES]
                                                         [--plan-csv FILE]
    python -m hesslab.book build [--out DIR]

``run`` executes every chapter listed in ``_toc.yml`` (MyST markdown notebooks in
``notebooks/``, read with jupytext) with papermill, passing the profile's parameters
from :mod:`hesslab.experiments.profiles`, into ``DIR/executed/<chapter>.ipynb``, and writes a timing
summary to ``DIR/executed/summary.json``. A failing chapter stops nothing else; at the end
the command exits non-zero naming each failing chapter and cell (its number among the
chapter's code cells and its first line) and saying what to do.

**Time limits.** Nothing waits forever. Each chapter runs in a worker process of its own
(``hesslab/book/_worker.py``); each cell may run ``--cell-timeout`` seconds and the whole
chapter, kernel start-up included, ``--chapter-timeout`` seconds (defaults per profile in
:data:`hesslab.experiments.profiles.TIME_LIMITS`: smoke 5 min / 10 min, cpu 4 h / 6 h, paper 12 h / 24 h).
A cell that runs past a limit, or whose kernel dies, fails its chapter; the kernel is shut
down, and killed with its process group if it does not exit. A worker that overruns its
chapter limit by :data:`KILL_GRACE` seconds is killed with its kernel. Failed chapters are
not retried (a retry would hide the failure and double the time of a hang). Only a
successful chapter writes ``executed/<chapter>.ipynb``; a failed one removes it and leaves
its partially executed notebook in ``executed/failed/``, and ``build`` refuses to build
while a chapter's last run failed.

**Widgets.** Output captured into an ``ipywidgets.Output`` (``with output:``) during batch
execution made nbclient send messages to the kernel on the socket on which it was waiting
for the cell's reply, which could lose that reply (see ``hesslab/book/_worker.py``); the
worker's nbclient records such output without sending anything, and the chapters put
their figures into widgets with :func:`hesslab.book.interactive.live_figure` instead.

**Stored paper-profile chapters.** A chapter executed successfully at the ``paper``
profile (on a GPU) is also stored, with a note on top of the page and its provenance
(device, wall time, versions, git revision, parameters), as
``data/results/paper/<chapter>.ipynb`` and ``.json``: commit them. A ``cpu`` run then
uses the stored chapter in place of executing it, as long as the chapter's source
(``notebooks/<chapter>.md``) is byte-identical to the one the stored run executed; a
stale one is reported and the chapter is executed at ``cpu``. ``--no-stored`` always
executes. Figures state their profile in their titles, and the execution-statistics page
lists which chapters come from stored paper runs. ``smoke`` never uses stored chapters.

**Parameters.** ``-p NAME VALUE`` (``--parameter``, repeatable) sets a chapter parameter
as papermill's ``-p`` does, on top of the profile's: the chapter gets
``parameters_for(chapter, profile) | overrides``. The value is read as papermill's command
line reads it (:func:`parameter_value`: ``True``, ``False``, ``None``, an int, a float, else
the string); where the chapter's default is a list, tuple or dict, the text is read as a
Python literal instead (``-p seeds "[0, 1]"``, ``-p models '["vgg16"]'``). ``-r NAME VALUE``
(``--parameter-raw``) passes the text as a string, as papermill's ``-r``. Before anything
executes, every name must be a parameter (a name in the tagged ``parameters`` cell) of every
selected chapter, of the default's type (an int does for a float, a bool never for an int),
and not ``profile`` (that is ``--profile``); otherwise the command exits with code 2 saying
why (:func:`check_overrides`). A run with overrides neither reuses nor stores stored
paper-profile chapters (those hold the default parameters); ``summary.json`` and the
execution-statistics page record the overrides.

``run --dry-run`` executes nothing: it prints, per chapter and model, the predicted
Hessian-vector products, Lanczos basis memory, peak memory and time on this device
(:func:`dry_run`).

``build`` assembles a source tree in ``DIR/src`` (the configuration, the prose pages,
the executed notebooks in place of the ``.md`` chapters, and an execution-statistics
page made from the summary) and builds it with ``jupyter-book build -W`` (warnings are
errors) into ``DIR/html``. Chapter sources and executed notebooks never share a folder.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from hesslab.experiments.profiles import PROFILES, TimeLimits, parameters_for, time_limits

ROOT = Path(__file__).resolve().parents[2]
#: seconds ``jupyter-book build`` may take (it renders executed notebooks; seconds in practice)
BUILD_TIMEOUT = 1800
DEFAULT_OUT = ROOT / "book" / "_build"
#: the profile whose executed chapters are stored in the repository and reused by ``cpu`` runs
STORED_PROFILE = "paper"


#: seconds the runner waits past a chapter's limit for its worker to fail by itself before
#: killing the worker and the kernel (the worker's own limits normally fire first)
KILL_GRACE = 30.0
#: where failed chapters' partially executed notebooks go, under ``executed/``
FAILED_DIR = "failed"
_WORKER = Path(__file__).with_name("_worker.py")


@dataclass
class ChapterRun:
    """Outcome of executing one chapter.

    ``failed_cell`` is the failing code cell's number in ``notebooks/<chapter>.md`` (counting
    its code cells from 1; ``None`` if no cell of the chapter was running) and
    ``failed_source`` its first line. ``failure`` says how it failed: ``"error"`` (an
    exception), ``"cell-timeout"``, ``"chapter-timeout"``, ``"dead-kernel"``, or ``""``.
    ``overrides`` holds the parameters given on top of the profile's (``-p``; ``{}``: none).
    """

    chapter: str
    profile: str
    seconds: float
    ok: bool
    error: str = ""
    failed_cell: int | None = None
    stored: str | None = None  # the stored record's path when the chapter was reused, not executed
    failed_source: str = ""
    failure: str = ""
    overrides: dict = field(default_factory=dict)

    def describe(self) -> str:
        """One line naming the chapter, the failing cell and what to do (``""`` when it succeeded)."""
        if self.ok:
            return ""
        if self.failed_cell is not None:
            where = f"at cell {self.failed_cell} (`{self.failed_source}`)"
        elif self.failed_source:
            where = f"in papermill's injected parameters cell (`{self.failed_source}`)"
        else:
            where = "before any cell ran"
        return f"chapter {self.chapter!r} failed {where}: {self.error}"


def chapters(root: Path = ROOT) -> list[str]:
    """Chapter stems (``notebooks/<stem>.md``) in table-of-contents order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                name = node.get(key)
                if isinstance(name, str) and name.startswith("notebooks/"):
                    found.append(Path(name).stem)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def _worker_command(spec: Path) -> list[str]:
    """The command that executes one chapter (run by path: it does not import hesslab or torch)."""
    return [sys.executable, str(_WORKER), str(spec)]


def _kill_group(pgid: int | None) -> None:
    if pgid and hasattr(os, "killpg"):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _failure_message(failure: str, error: str, profile: str, limits: TimeLimits) -> str:
    if failure == "cell-timeout":
        return (f"timed out: the cell ran past the cell limit of {limits.cell:g} s ({profile} profile). "
                "If the machine is just slow, raise it with --cell-timeout SECONDS; if the cell hangs "
                "(an idle kernel), interrupt it in JupyterLab to see where")
    if failure == "chapter-timeout":
        return (f"timed out: the chapter ran past the chapter limit of {limits.chapter:g} s ({profile} profile) "
                f"during this cell. If the machine is just slow, raise it with --chapter-timeout SECONDS")
    if failure == "dead-kernel":
        return ("the kernel died while this cell ran (killed, out of memory, a crash in native code, "
                "or os._exit); run the chapter in JupyterLab to see it")
    return error


def execute_chapter(chapter: str, profile: str, out_dir: Path, root: Path = ROOT,
                    limits: TimeLimits | None = None, overrides: dict | None = None) -> ChapterRun:
    """Execute ``notebooks/<chapter>.md`` at ``profile`` into ``out_dir/<chapter>.ipynb``, under time limits.

    papermill injects ``parameters_for(chapter, profile) | overrides`` (``overrides`` as
    returned by :func:`check_overrides`; nothing checks them here).
    The chapter runs in a worker process (``hesslab/book/_worker.py``, papermill) with each
    cell limited to ``limits.cell`` seconds and the whole chapter, kernel start-up included,
    to ``limits.chapter`` (default: the profile's :data:`~hesslab.experiments.profiles.TIME_LIMITS`).
    On a timeout the kernel is shut down (and killed if it does not exit). Should the worker
    itself overrun by :data:`KILL_GRACE` seconds, it and its kernel are killed.

    Only a successful run writes ``out_dir/<chapter>.ipynb``; a failed run removes it (it
    would be a stale result) and leaves the partially executed notebook in
    ``out_dir/failed/<chapter>.ipynb``.
    """
    import jupytext

    source = root / "notebooks" / f"{chapter}.md"
    if not source.exists():
        raise FileNotFoundError(f"chapter {chapter!r} is in _toc.yml but {source} does not exist")
    limits = limits or time_limits(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / ".work"
    work.mkdir(exist_ok=True)
    target, failed = out_dir / f"{chapter}.ipynb", out_dir / FAILED_DIR / f"{chapter}.ipynb"
    paths = {name: work / f"{chapter}.{name}" for name in
             ("input.ipynb", "output.ipynb", "job.json", "status.json", "result.json")}
    for path in paths.values():
        path.unlink(missing_ok=True)
    jupytext.write(jupytext.read(source), paths["input.ipynb"])
    paths["job.json"].write_text(json.dumps({
        "input": str(paths["input.ipynb"]), "output": str(paths["output.ipynb"]), "cwd": str(root / "notebooks"),
        "parameters": parameters_for(chapter, profile) | dict(overrides or {}), "kernel_name": "python3",
        "cell_limit": limits.cell, "chapter_limit": limits.chapter,
        "status": str(paths["status.json"]), "result": str(paths["result.json"])}))
    start = time.perf_counter()
    worker = subprocess.Popen(_worker_command(paths["job.json"]), start_new_session=True)
    killed = False
    try:
        worker.wait(timeout=limits.chapter + KILL_GRACE)
    except subprocess.TimeoutExpired:
        killed = True
    finally:
        if killed or worker.poll() is None:  # overran, or we are interrupted: leave no worker or kernel behind
            status = _read_json(paths["status.json"]) or {}
            _kill_group(worker.pid)
            _kill_group(status.get("kernel_pgid"))
            worker.kill()  # where there are no process groups
            worker.wait(timeout=KILL_GRACE)
    seconds = time.perf_counter() - start
    result = _read_json(paths["result.json"])
    if killed or result is None:
        status = _read_json(paths["status.json"]) or {}
        failure = "chapter-timeout" if killed else "error"
        error = ("the chapter worker did not finish within the chapter limit and was killed with its kernel"
                 if killed else f"the chapter worker exited with code {worker.returncode} without a result")
        result = {"ok": False, "failure": failure, "error": error, "cell": status.get("cell")}
    cell = result.get("cell") or {}
    message = "" if result["ok"] else _failure_message(result["failure"], result["error"], profile, limits)
    if killed:
        message += (f"; its worker had not stopped {KILL_GRACE:g} s after that limit and was killed with its kernel "
                    "(a hang outside the cells: report it)")
    run = ChapterRun(chapter, profile, seconds, bool(result["ok"]), message,
                     cell.get("number") if not result["ok"] else None,
                     failed_source="" if result["ok"] else cell.get("source", ""),
                     failure=result["failure"], overrides=dict(overrides or {}))
    if run.ok:
        os.replace(paths["output.ipynb"], target)
        failed.unlink(missing_ok=True)
    else:
        target.unlink(missing_ok=True)
        if paths["output.ipynb"].exists():
            failed.parent.mkdir(exist_ok=True)
            os.replace(paths["output.ipynb"], failed)
    for path in paths.values():
        path.unlink(missing_ok=True)
    try:
        work.rmdir()
    except OSError:
        pass
    return run


def stored_dir(root: Path = ROOT, profile: str = STORED_PROFILE) -> Path:
    """Where executed chapters of ``profile`` are stored in the repository: ``data/results/<profile>``."""
    return root / "data" / "results" / profile


def _source_sha256(chapter: str, root: Path) -> str:
    return hashlib.sha256((root / "notebooks" / f"{chapter}.md").read_bytes()).hexdigest()


def store_chapter(run_result: ChapterRun, executed: Path, root: Path = ROOT) -> Path:
    """Store a successfully executed chapter with its provenance; returns the record's path.

    The notebook gets a note as its second cell naming the profile, device, date and wall
    time. Both files are written to temporary names and renamed, so an interrupted store
    leaves the previous one intact.
    """
    import nbformat

    from hesslab.storage.cache import provenance

    if not run_result.ok:
        raise ValueError(f"chapter {run_result.chapter!r} failed; only successful runs are stored")
    if run_result.overrides:
        raise ValueError(f"chapter {run_result.chapter!r} ran with parameters {run_result.overrides} on top of "
                         "the profile's; only runs with the default parameters are stored")
    name, folder = run_result.chapter, stored_dir(root, run_result.profile)
    folder.mkdir(parents=True, exist_ok=True)
    env = provenance()
    record = {"chapter": name, "profile": run_result.profile, "seconds": run_result.seconds,
              "source_sha256": _source_sha256(name, root), "parameters": parameters_for(name, run_result.profile),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "environment": env}
    nb = nbformat.read(executed / f"{name}.ipynb", as_version=4)
    note = (f"```{{note}}\nThis page was executed at the **{run_result.profile}** profile on {env['device']} "
            f"({record['date']}, {run_result.seconds / 60:.1f} min, hesslab revision "
            f"`{(env['git_revision'] or 'unknown')[:10]}`) and stored in `data/results/{run_result.profile}/`; "
            f"`make book` shows it while this chapter's source is unchanged.\n```")
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(note, metadata={"tags": ["stored-run-note"]}))
    for suffix, write in [(".ipynb", lambda f: nbformat.write(nb, f)),
                          (".json", lambda f: f.write(json.dumps(record, indent=2)))]:
        tmp = folder / f".{name}{suffix}.tmp"
        with open(tmp, "w") as f:
            write(f)
        os.replace(tmp, folder / f"{name}{suffix}")
    return folder / f"{name}.json"


def _reuse_stored(chapter: str, executed: Path, root: Path) -> ChapterRun | None:
    """Copy the stored chapter into ``executed`` if it exists and is current; else None."""
    folder = stored_dir(root)
    record_path, notebook = folder / f"{chapter}.json", folder / f"{chapter}.ipynb"
    if not (record_path.exists() and notebook.exists()):
        return None
    try:
        record = json.loads(record_path.read_text())
        current = record["source_sha256"] == _source_sha256(chapter, root)
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        print(f"{chapter}: ignoring the stored {STORED_PROFILE} run, its record {record_path} is unreadable ({err})")
        return None
    if not current:
        print(f"{chapter}: the stored {STORED_PROFILE} run is stale (notebooks/{chapter}.md changed since); executing")
        return None
    executed.mkdir(parents=True, exist_ok=True)
    shutil.copy(notebook, executed / f"{chapter}.ipynb")
    return ChapterRun(chapter, record["profile"], float(record["seconds"]), True, stored=str(record_path))


def run(profile: str, only: list[str] | None = None, out: Path = DEFAULT_OUT, root: Path = ROOT,
        use_stored: bool | None = None, cell_timeout: float | None = None,
        chapter_timeout: float | None = None, overrides: dict | None = None) -> list[ChapterRun]:
    """Execute the chapters (all, or ``only``) at ``profile``; see the module docstring.

    Args:
        profile: one of :data:`hesslab.experiments.profiles.PROFILES`.
        only: chapter stems to run (default: every chapter in ``_toc.yml``).
        out: output folder; notebooks go to ``out/executed``.
        root: the book's source tree (``_toc.yml``, ``notebooks/``, ``data/results``).
        use_stored: reuse current stored paper-profile chapters (default: for ``cpu`` only).
            Runs at the stored profile itself store their successful chapters.
        cell_timeout: seconds one cell may run (default: the profile's, see
            :data:`hesslab.experiments.profiles.TIME_LIMITS`).
        chapter_timeout: seconds one chapter may run (default: the profile's).
        overrides: parameter name -> value, on top of the profile's parameters (``-p``),
            checked against every selected chapter before anything runs
            (:func:`check_overrides`). A run with overrides neither reuses nor stores
            stored chapters.

    Returns:
        One :class:`ChapterRun` per chapter, in ``_toc.yml`` order.

    Raises:
        ValueError: an unknown profile or chapter, a non-positive time limit, or overrides
            that :func:`check_overrides` refuses.
    """
    from tqdm.auto import tqdm

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    limits = time_limits(profile, cell=cell_timeout, chapter=chapter_timeout)
    names = chapters(root)
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ValueError(f"no chapter named {unknown} in _toc.yml; chapters: {names}")
    selected = [n for n in names if not only or n in only]
    checked = check_overrides(overrides or {}, selected, profile, root)
    executed = Path(out) / "executed"
    results = []
    reuse = profile == "cpu" if use_stored is None else use_stored
    if overrides and (reuse or profile == STORED_PROFILE):
        print(f"parameters given with -p/-r ({_format_overrides(overrides)}): stored {STORED_PROFILE}-profile "
              "chapters are neither reused nor stored (they hold the default parameters)")
        reuse = False
    bar = tqdm(selected, desc=f"chapters ({profile})", unit="chapter")
    for name in bar:
        bar.set_postfix_str(name)
        result = _reuse_stored(name, executed, root) if reuse and profile != STORED_PROFILE else None
        if result is None:
            result = execute_chapter(name, profile, executed, root, limits, checked[name])
            if result.ok and profile == STORED_PROFILE and not result.overrides:
                print(f"{name}: stored as {store_chapter(result, executed, root)}")
        results.append(result)
    summary_path = executed / "summary.json"
    previous = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    previous.update({r.chapter: asdict(r) for r in results})
    summary_path.write_text(json.dumps(previous, indent=2))
    print(f"\n{'chapter':<24}{'profile':<9}{'seconds':>9}  result")
    for r in results:
        where = f" at cell {r.failed_cell}" if r.failed_cell is not None else ""
        status = "ok" if r.ok else f"FAILED ({r.failure}{where})"
        extra = " (stored run)" if r.stored else f" with {_format_overrides(r.overrides)}" if r.overrides else ""
        print(f"{r.chapter:<24}{r.profile:<9}{r.seconds:>9.1f}  {status}{extra}")
    return results


def _statistics_page(summary: dict) -> str:
    lines = ["# Execution statistics", "",
             "How each chapter of this build was executed (papermill). A *stored* chapter was executed "
             f"at the {STORED_PROFILE} profile on the machine its page names and is reused from "
             f"`data/results/{STORED_PROFILE}/`; the others ran on this build's machine. A chapter run with "
             "parameters other than its profile's (`python -m hesslab.book run -p NAME VALUE`) names them.", "",
             "| chapter | profile | run time (s) | result |", "|---|---|---:|---|"]
    for name, r in summary.items():
        result = "ok" if r["ok"] else f"failed: {r['error']}"
        if r.get("stored"):
            result += " (stored run)"
        if r.get("overrides"):
            given = ", ".join(f"`{key} = {value!r}`" for key, value in r["overrides"].items())
            result += f" (non-default parameters: {given})".replace("|", "\\|")
        lines.append(f"| {{doc}}`{name} <../notebooks/{name}>` | {r['profile']} | {r['seconds']:.1f} | {result} |")
    return "\n".join(lines) + "\n"


def build(out: Path = DEFAULT_OUT, root: Path = ROOT) -> Path:
    """Build the HTML book from the executed notebooks; returns the HTML folder."""
    out = Path(out)
    executed = out / "executed"
    names = chapters(root)
    summary_path = executed / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    failed = [f"{n}: {summary[n].get('error', '')}" for n in names if n in summary and not summary[n]["ok"]]
    if failed:
        raise FileNotFoundError("chapters failed in their last run, so there is no executed notebook to build "
                                f"from (partial ones are in {executed / FAILED_DIR}); fix them and run "
                                "'python -m hesslab.book run --only NAME ...' again:\n  " + "\n  ".join(failed))
    missing = [n for n in names if not (executed / f"{n}.ipynb").exists() or n not in summary]
    if missing:
        raise FileNotFoundError(f"chapters {missing} have not been executed; run "
                                f"'python -m hesslab.book run --profile cpu' first")
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(root / name, src / name)
    shutil.copytree(root / "book", src / "book", ignore=shutil.ignore_patterns("_build"))
    (src / "notebooks").mkdir()
    for name in names:
        shutil.copy(executed / f"{name}.ipynb", src / "notebooks" / f"{name}.ipynb")
    (src / "book" / "execution-statistics.md").write_text(_statistics_page({n: summary[n] for n in names}))
    html = out / "html"
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(src), "--path-output", str(out / "jb"),
           "--warningiserror", "--keep-going", "--quiet"]
    env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1")
    # the executed notebooks are only rendered (nothing runs): half an hour is a hang
    subprocess.run(cmd, check=True, env=env, timeout=BUILD_TIMEOUT)
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(out / "jb" / "_build" / "html", html)
    print(f"HTML book: {html / 'index.html'}")
    return html


def _cell_parameters(chapter: str, root: Path = ROOT) -> dict:
    """The values of a chapter's tagged ``parameters`` cell (its ``cpu`` defaults)."""
    import jupytext

    notebook = jupytext.read(root / "notebooks" / f"{chapter}.md")
    cells = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ValueError(f"chapter {chapter!r} has no cell tagged 'parameters'")
    values: dict = {}
    exec(compile(cells[0].source, f"{chapter}:parameters", "exec"), {}, values)  # the repository's own cell
    return values


def chapter_parameters(chapter: str, profile: str, root: Path = ROOT) -> dict:
    """A chapter's parameters at ``profile``: its tagged ``parameters`` cell with the profile's overrides."""
    return _cell_parameters(chapter, root) | parameters_for(chapter, profile)


class ParameterText(str):
    """A ``-p`` value that papermill's rules leave a string (see :func:`parameter_value`).

    :func:`check_overrides` reads it as a Python literal where the chapter's default is a
    list, tuple or dict; a plain ``str`` (``-r``, or from Python) stays a string.
    """


def parameter_value(text: str):
    """A ``-p NAME VALUE`` value as papermill's command line reads it (``papermill.cli._resolve_type``).

    ``"True"``, ``"False"`` and ``"None"`` are those constants, text that ``int()`` reads an
    int, text that ``float()`` reads a float, and anything else the text itself, as a
    :class:`ParameterText`.
    """
    if text == "True":
        return True
    if text == "False":
        return False
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return ParameterText(text)


_CONTAINERS = (list, tuple, dict)


def _kind(default) -> str:
    """How a type error names the type of ``default``."""
    if isinstance(default, bool):
        return "a bool (True or False)"
    if isinstance(default, int):
        return "an int"
    if isinstance(default, float):
        return "a float (or an int)"
    if isinstance(default, str):
        return "a string"
    return {list: "a list", tuple: "a tuple", dict: "a dict"}.get(type(default), f"a {type(default).__name__}")


def _scalar_fits(value, default) -> bool:
    """Whether ``value`` has ``default``'s scalar type (an int does for a float, a bool only for a bool)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _typed(value, default):
    """``value`` as the parameter whose default is ``default`` takes it; ``None`` and a reason if it does not fit."""
    if default is None:
        return (str(value) if isinstance(value, str) else value), ""
    if isinstance(default, _CONTAINERS):
        if isinstance(value, ParameterText):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return None, f"{str(value)!r} is not a Python literal"
        container = tuple if isinstance(default, tuple) else type(default)
        if container is dict and not isinstance(value, dict):
            return None, f"{value!r} is not a dict"
        if container is not dict:
            if not isinstance(value, (list, tuple)):
                return None, f"{value!r} is not a list"
            kinds = {type(d) for d in default}
            if len(kinds) == 1 and kinds <= {bool, int, float, str}:
                bad = [v for v in value if not _scalar_fits(v, default[0])]
                if bad:
                    items = {bool: "bools", int: "ints", float: "numbers", str: "strings"}[type(default[0])]
                    return None, f"its items must be {items}, not {bad[0]!r}"
            value = container(value)
        return value, ""
    if not _scalar_fits(value, default):
        return None, f"not {value!r} ({'str' if isinstance(value, str) else type(value).__name__})"
    return (str(value) if isinstance(value, str) else value), ""


def check_overrides(overrides: dict, names: list[str], profile: str, root: Path = ROOT) -> dict[str, dict]:
    """Check parameter overrides against each chapter's tagged ``parameters`` cell, before anything runs.

    Args:
        overrides: parameter name -> value (a :class:`ParameterText` from ``-p`` is read as
            a Python literal where the default is a list, tuple or dict).
        names: the chapters that are to run with them.
        profile: the profile they run at (named in the messages).
        root: the book's source tree.

    Returns:
        Chapter -> the overrides as that chapter takes them (``{}`` for every chapter when
        ``overrides`` is empty); papermill injects ``parameters_for(chapter, profile) | them``.

    Raises:
        ValueError: ``profile`` among the names (use ``--profile``), a name that is not a
            parameter of every chapter in ``names`` (naming those lacking it, their
            parameters, and ``--only`` for the chapters that have it), or a value not of the
            default's type; one message lists every problem.
    """
    checked: dict[str, dict] = {name: {} for name in names}
    if not overrides:
        return checked
    problems = []
    if "profile" in overrides:
        problems.append("'profile' is chosen with --profile (it also sets the model sizes and the other "
                        "parameters' profile values), not with -p/-r")
    defaults = {name: _cell_parameters(name, root) for name in names}
    for key, value in overrides.items():
        if key == "profile":
            continue
        lacking = [name for name in names if key not in defaults[name]]
        if lacking:
            having = [name for name in names if name not in lacking]
            lines = [f"{key!r} is not a parameter of chapter{'s' if len(lacking) > 1 else ''} "
                     + ", ".join(repr(name) for name in lacking)]
            lines += [f"  {name}'s parameters: "
                      + (", ".join(p for p in defaults[name] if p != "profile") or "none but profile")
                      for name in lacking]
            if having:
                lines.append(f"  it is a parameter of {', '.join(having)} only: "
                             f"run those with --only {' '.join(having)}")
            problems.append("\n".join(lines))
            continue
        for name in names:
            default = defaults[name][key]
            typed, why = _typed(value, default)
            if why:
                at_profile = parameters_for(name, profile).get(key, default)
                shown = repr(default) + (f" ({at_profile!r} at the {profile} profile)" if at_profile != default else "")
                hint = ""
                if isinstance(default, _CONTAINERS):
                    hint = f"; give it as a Python literal, e.g. -p {key} \"{default!r}\""
                elif isinstance(default, str) and not isinstance(value, str):
                    hint = (f"; papermill's -p reads True, False, None and numbers as such, "
                            f"-r {key} VALUE passes VALUE as a string")
                problems.append(f"parameter {key!r} of chapter {name!r} must be {_kind(default)} like its "
                                f"default {shown}{', ' if why.startswith('not ') else ': '}{why}{hint}")
            else:
                checked[name][key] = typed
    if problems:
        raise ValueError("parameters given with -p/-r:\n" + "\n".join(problems))
    return checked


def _format_overrides(overrides: dict) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in overrides.items())


def dry_run(profile: str, only: list[str] | None = None, root: Path = ROOT, *,
            calibration_examples: int | None = None, lanczos: list[tuple[int, int]] | None = None,
            csv: Path | None = None, overrides: dict | None = None) -> str:
    """The predicted cost of running the chapters at ``profile`` on this device, as text (nothing is executed).

    Each model is built at the profile's size and calibrated once (one gradient and one
    Hessian-vector product, :func:`hesslab.plan.calibrate`); see
    :func:`hesslab.experiments.planning.plan_book`. Each ``(steps, probes)`` in ``lanczos``
    adds a table at those settings, from the same calibration. ``csv`` also writes each
    table (``<name>.csv``, ``<name>-m<steps>-n<probes>.csv``) and its per-chapter summary
    beside it (``...-chapters.csv``). ``overrides`` prices the chapters with those
    parameters on top of the profile's (see :func:`check_overrides`).
    """
    from hesslab.experiments.planning import chapter_summary, format_plan, plan_book_variants

    names = only or chapters(root)
    checked = check_overrides(overrides or {}, names, profile, root)
    variants = [None, *(lanczos or [])]
    parameters = {c: chapter_parameters(c, profile, root) | checked[c] for c in names}
    tables = plan_book_variants(parameters, profile, variants, calibration_examples=calibration_examples)
    out = []
    for variant, table in zip(variants, tables):
        label = "the profile's Lanczos settings" if variant is None else f"m = {variant[0]}, n_v = {variant[1]}"
        out.append(f"predicted cost at profile {profile!r} on {table.attrs['device']}, {label}:\n" + format_plan(table))
        if csv is not None:
            csv.parent.mkdir(parents=True, exist_ok=True)
            path = csv if variant is None else csv.with_name(f"{csv.stem}-m{variant[0]}-n{variant[1]}.csv")
            table.to_csv(path, index=False, float_format="%.4g")
            chapter_summary(table).to_csv(path.with_name(f"{path.stem}-chapters.csv"), index=False,
                                          float_format="%.3g")
    return "\n\n".join(out)


def _parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(prog="python -m hesslab.book", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute chapters with papermill")
    p_run.add_argument("--profile", choices=PROFILES, default="cpu")
    p_run.add_argument("--only", nargs="+", metavar="NAME", help="chapter stems to run")
    p_run.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p_run.add_argument("--no-stored", action="store_true",
                       help=f"execute every chapter, even where a current stored {STORED_PROFILE} run exists")
    p_run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), dest="parameters",
                       help="set a chapter parameter on top of the profile's, as papermill's -p (repeatable): "
                            "True, False, None, an int or a float as such, else the text; where the chapter's "
                            "default is a list, tuple or dict, a Python literal (-p seeds \"[0, 1]\"). Every "
                            "selected chapter must have the parameter, of the default's type (an int does for a "
                            "float); not 'profile' (use --profile). Stored "
                            f"{STORED_PROFILE}-profile chapters are then neither reused nor stored")
    p_run.add_argument("-r", "--parameter-raw", nargs=2, action="append", metavar=("NAME", "VALUE"),
                       dest="parameters_raw",
                       help="as -p, but VALUE is passed as a string (papermill's -r); applied after every -p")
    defaults = {name: time_limits(name) for name in PROFILES}
    p_run.add_argument("--cell-timeout", type=float, metavar="SECONDS",
                       help="the longest one cell may run (default: the profile's; "
                            + ", ".join(f"{n} {d.cell:g}" for n, d in defaults.items()) + ")")
    p_run.add_argument("--chapter-timeout", type=float, metavar="SECONDS",
                       help="the longest one chapter may run (default: the profile's; "
                            + ", ".join(f"{n} {d.chapter:g}" for n, d in defaults.items()) + ")")
    p_run.add_argument("--dry-run", action="store_true",
                       help="print each chapter's predicted HVPs, memory and time on this device; run nothing")
    p_run.add_argument("--calibration-examples", type=int, metavar="N",
                       help="with --dry-run: calibrate each model on N examples of one Hessian batch "
                            "(the paper's sizes on a CPU); default the whole batch")
    p_run.add_argument("--lanczos", type=int, nargs=2, metavar=("STEPS", "PROBES"), action="append",
                       help="with --dry-run: also price these Lanczos settings (repeatable)")
    p_run.add_argument("--plan-csv", type=Path, metavar="FILE", help="with --dry-run: also write the table here")
    p_build = sub.add_parser("build", help="build the HTML book from executed chapters")
    p_build.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser


def overrides_from(args: argparse.Namespace) -> dict:
    """The ``-p`` and ``-r`` parameters of a parsed ``run`` command line, as papermill combines them.

    ``-p`` values go through :func:`parameter_value`, ``-r`` values stay text; as in papermill,
    every ``-r`` is applied after every ``-p``, and a later value of a name replaces an earlier one.
    """
    return ({name: parameter_value(value) for name, value in args.parameters or []}
            | {name: value for name, value in args.parameters_raw or []})


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    """Command-line entry point (see the module docstring)."""
    args = _parser().parse_args(argv)
    if args.command == "run" and args.dry_run:
        overrides = overrides_from(args)
        try:
            check_overrides(overrides, args.only or chapters(root), args.profile, root)
        except ValueError as err:
            print(err, file=sys.stderr)
            return 2
        print(dry_run(args.profile, args.only, root, calibration_examples=args.calibration_examples,
                      lanczos=[tuple(v) for v in args.lanczos or []], csv=args.plan_csv, overrides=overrides))
        return 0
    if args.command == "run":
        try:
            results = run(args.profile, args.only, args.out, root, use_stored=False if args.no_stored else None,
                          cell_timeout=args.cell_timeout, chapter_timeout=args.chapter_timeout,
                          overrides=overrides_from(args))
        except ValueError as err:  # unknown chapter, non-positive limit, refused parameters
            print(err, file=sys.stderr)
            return 2
        failed = [r for r in results if not r.ok]
        for r in failed:
            print(r.describe(), file=sys.stderr)
        return 1 if failed else 0
    try:
        build(args.out, root)
    except subprocess.CalledProcessError as err:
        print(f"jupyter-book build failed (exit {err.returncode}); warnings are errors", file=sys.stderr)
        return 1
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
