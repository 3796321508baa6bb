"""Run the book's chapters with papermill and build the HTML with jupyter-book.

    python -m hesslab.book run --profile smoke|cpu|paper [--only NAME ...] [--out DIR] [--no-stored]
    python -m hesslab.book build [--out DIR]

``run`` executes every chapter listed in ``_toc.yml`` (MyST markdown notebooks in
``notebooks/``, read with jupytext) with papermill, passing the profile's parameters
from :mod:`hesslab.profiles`, into ``DIR/executed/<chapter>.ipynb``, and writes a timing
summary to ``DIR/executed/summary.json``. A failing chapter stops nothing else; at the end
the command exits non-zero naming each failing chapter and cell.

**Stored paper-profile chapters.** A chapter executed successfully at the ``paper``
profile (on a GPU) is also stored, with a note on top of the page and its provenance
(device, wall time, versions, git revision, parameters), as
``data/results/paper/<chapter>.ipynb`` and ``.json``: commit them. A ``cpu`` run then
uses the stored chapter in place of executing it, as long as the chapter's source
(``notebooks/<chapter>.md``) is byte-identical to the one the stored run executed; a
stale one is reported and the chapter is executed at ``cpu``. ``--no-stored`` always
executes. Figures state their profile in their titles, and the execution-statistics page
lists which chapters come from stored paper runs. ``smoke`` never uses stored chapters.

``build`` assembles a source tree in ``DIR/src`` (the configuration, the prose pages,
the executed notebooks in place of the ``.md`` chapters, and an execution-statistics
page made from the summary) and builds it with ``jupyter-book build -W`` (warnings are
errors) into ``DIR/html``. Chapter sources and executed notebooks never share a folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from .profiles import PROFILES, parameters_for

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "book" / "_build"
#: the profile whose executed chapters are stored in the repository and reused by ``cpu`` runs
STORED_PROFILE = "paper"


@dataclass
class ChapterRun:
    """Outcome of executing one chapter."""

    chapter: str
    profile: str
    seconds: float
    ok: bool
    error: str = ""
    failed_cell: int | None = None
    stored: str | None = None  # the stored record's path when the chapter was reused, not executed


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


def execute_chapter(chapter: str, profile: str, out_dir: Path, root: Path = ROOT) -> ChapterRun:
    """Execute ``notebooks/<chapter>.md`` at ``profile`` into ``out_dir/<chapter>.ipynb``."""
    import jupytext
    import papermill as pm

    source = root / "notebooks" / f"{chapter}.md"
    if not source.exists():
        raise FileNotFoundError(f"chapter {chapter!r} is in _toc.yml but {source} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{chapter}.ipynb"
    staged = out_dir / f".{chapter}.input.ipynb"
    jupytext.write(jupytext.read(source), staged)
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(staged), str(target), parameters=parameters_for(chapter, profile),
                            kernel_name="python3", cwd=str(root / "notebooks"), progress_bar=False)
        return ChapterRun(chapter, profile, time.perf_counter() - start, True)
    except pm.PapermillExecutionError as err:
        return ChapterRun(chapter, profile, time.perf_counter() - start, False,
                          f"{err.ename}: {err.evalue}", err.exec_count)
    except Exception as err:  # kernel died, bad parameters, ...
        return ChapterRun(chapter, profile, time.perf_counter() - start, False, f"{type(err).__name__}: {err}")
    finally:
        staged.unlink(missing_ok=True)


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

    from .cache import provenance

    if not run_result.ok:
        raise ValueError(f"chapter {run_result.chapter!r} failed; only successful runs are stored")
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
        use_stored: bool | None = None) -> list[ChapterRun]:
    """Execute the chapters (all, or ``only``) at ``profile``; see the module docstring.

    Args:
        profile: one of :data:`hesslab.profiles.PROFILES`.
        only: chapter stems to run (default: every chapter in ``_toc.yml``).
        out: output folder; notebooks go to ``out/executed``.
        root: the book's source tree (``_toc.yml``, ``notebooks/``, ``data/results``).
        use_stored: reuse current stored paper-profile chapters (default: for ``cpu`` only).
            Runs at the stored profile itself store their successful chapters.

    Returns:
        One :class:`ChapterRun` per chapter, in ``_toc.yml`` order.
    """
    from tqdm.auto import tqdm

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    names = chapters(root)
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ValueError(f"no chapter named {unknown} in _toc.yml; chapters: {names}")
    selected = [n for n in names if not only or n in only]
    executed = Path(out) / "executed"
    results = []
    bar = tqdm(selected, desc=f"chapters ({profile})", unit="chapter")
    reuse = profile == "cpu" if use_stored is None else use_stored
    for name in bar:
        bar.set_postfix_str(name)
        result = _reuse_stored(name, executed, root) if reuse and profile != STORED_PROFILE else None
        if result is None:
            result = execute_chapter(name, profile, executed, root)
            if result.ok and profile == STORED_PROFILE:
                print(f"{name}: stored as {store_chapter(result, executed, root)}")
        results.append(result)
    summary_path = executed / "summary.json"
    previous = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    previous.update({r.chapter: asdict(r) for r in results})
    summary_path.write_text(json.dumps(previous, indent=2))
    print(f"\n{'chapter':<24}{'profile':<9}{'seconds':>9}  result")
    for r in results:
        where = f" (cell {r.failed_cell})" if r.failed_cell else ""
        status = "ok" if r.ok else "FAILED" + where
        print(f"{r.chapter:<24}{r.profile:<9}{r.seconds:>9.1f}  {status}{' (stored run)' if r.stored else ''}")
    return results


def _statistics_page(summary: dict) -> str:
    lines = ["# Execution statistics", "",
             "How each chapter of this build was executed (papermill). A *stored* chapter was executed "
             f"at the {STORED_PROFILE} profile on the machine its page names and is reused from "
             f"`data/results/{STORED_PROFILE}/`; the others ran on this build's machine.", "",
             "| chapter | profile | run time (s) | result |", "|---|---|---:|---|"]
    for name, r in summary.items():
        result = "ok" if r["ok"] else f"failed: {r['error']}"
        if r.get("stored"):
            result += " (stored run)"
        lines.append(f"| {{doc}}`{name} <../notebooks/{name}>` | {r['profile']} | {r['seconds']:.1f} | {result} |")
    return "\n".join(lines) + "\n"


def build(out: Path = DEFAULT_OUT, root: Path = ROOT) -> Path:
    """Build the HTML book from the executed notebooks; returns the HTML folder."""
    out = Path(out)
    executed = out / "executed"
    names = chapters(root)
    missing = [n for n in names if not (executed / f"{n}.ipynb").exists()]
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
    summary = json.loads((executed / "summary.json").read_text())
    (src / "book" / "execution-statistics.md").write_text(_statistics_page({n: summary[n] for n in names}))
    html = out / "html"
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(src), "--path-output", str(out / "jb"),
           "--warningiserror", "--keep-going", "--quiet"]
    env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1")
    subprocess.run(cmd, check=True, env=env)
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(out / "jb" / "_build" / "html", html)
    print(f"HTML book: {html / 'index.html'}")
    return html


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m hesslab.book", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute chapters with papermill")
    p_run.add_argument("--profile", choices=PROFILES, default="cpu")
    p_run.add_argument("--only", nargs="+", metavar="NAME", help="chapter stems to run")
    p_run.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p_run.add_argument("--no-stored", action="store_true",
                       help=f"execute every chapter, even where a current stored {STORED_PROFILE} run exists")
    p_build = sub.add_parser("build", help="build the HTML book from executed chapters")
    p_build.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.command == "run":
        results = run(args.profile, args.only, args.out, root, use_stored=False if args.no_stored else None)
        failed = [r for r in results if not r.ok]
        for r in failed:
            where = f"at cell {r.failed_cell}" if r.failed_cell else "before any cell ran"
            print(f"chapter {r.chapter!r} failed {where}: {r.error}", file=sys.stderr)
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
