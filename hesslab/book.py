"""Run the book's chapters with papermill and build the HTML with jupyter-book.

    python -m hesslab.book run --profile smoke|cpu|paper [--only NAME ...] [--out DIR]
    python -m hesslab.book build [--out DIR]

``run`` executes every chapter listed in ``_toc.yml`` (MyST markdown notebooks in
``notebooks/``, read with jupytext) with papermill, passing the profile's parameters
from :mod:`hesslab.profiles`, into ``DIR/executed/<chapter>.ipynb``, and writes a timing
summary to ``DIR/executed/summary.json``. A failing chapter stops nothing else; at the end
the command exits non-zero naming each failing chapter and cell.

``build`` assembles a source tree in ``DIR/src`` (the configuration, the prose pages,
the executed notebooks in place of the ``.md`` chapters, and an execution-statistics
page made from the summary) and builds it with ``jupyter-book build -W`` (warnings are
errors) into ``DIR/html``. Chapter sources and executed notebooks never share a folder.
"""

from __future__ import annotations

import argparse
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


@dataclass
class ChapterRun:
    """Outcome of executing one chapter."""

    chapter: str
    profile: str
    seconds: float
    ok: bool
    error: str = ""
    failed_cell: int | None = None


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


def run(profile: str, only: list[str] | None = None, out: Path = DEFAULT_OUT, root: Path = ROOT) -> list[ChapterRun]:
    """Execute the chapters (all, or ``only``) at ``profile``; see the module docstring."""
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
    for name in bar:
        bar.set_postfix_str(name)
        results.append(execute_chapter(name, profile, executed, root))
    summary_path = executed / "summary.json"
    previous = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    previous.update({r.chapter: asdict(r) for r in results})
    summary_path.write_text(json.dumps(previous, indent=2))
    print(f"\n{'chapter':<24}{'profile':<9}{'seconds':>9}  result")
    for r in results:
        where = f" (cell {r.failed_cell})" if r.failed_cell else ""
        print(f"{r.chapter:<24}{r.profile:<9}{r.seconds:>9.1f}  {'ok' if r.ok else 'FAILED' + where}")
    return results


def _statistics_page(summary: dict) -> str:
    lines = ["# Execution statistics", "",
             "How each chapter of this build was executed (papermill, this build's machine).", "",
             "| chapter | profile | run time (s) | result |", "|---|---|---:|---|"]
    for name, r in summary.items():
        result = "ok" if r["ok"] else f"failed: {r['error']}"
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
    p_build = sub.add_parser("build", help="build the HTML book from executed chapters")
    p_build.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.command == "run":
        results = run(args.profile, args.only, args.out, root)
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
