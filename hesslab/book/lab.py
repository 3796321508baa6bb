"""Work with the chapters interactively: JupyterLab on the book's own environment.

    python -m hesslab.book lab [--port N] [--no-browser] [--ip ADDRESS] [-- JUPYTER-LAB-ARGS ...]

(``make lab`` runs it in the book's virtual environment.) JupyterLab starts in the
repository with its file browser on ``notebooks/``. The chapters are MyST markdown
notebooks; jupytext's server extension (installed with the ``[book]`` extra) reads them as
notebooks, and :func:`configure` makes "Jupytext Notebook" the default viewer of Markdown
and MyST files (and turns off JupyterLab's news and update checks), so a double click opens a chapter as a notebook with its outputs cleared,
ready to run. The kernel is the ``python3`` kernel of the same environment, so a chapter
uses the same ``hesslab`` and the same result cache (``data/cache``) as ``make book``:
after ``make book``, rerunning a chapter reads its results from the cache. The widget
extension (``jupyterlab_widgets``, pulled in by ipywidgets) makes the sliders live.

The setting is written to this environment's JupyterLab application settings
(``<prefix>/share/jupyter/lab/settings/overrides.json``), not to the user's home, and is
merged with what that file already holds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: JupyterLab settings: Markdown and MyST files open as notebooks (jupytext's viewer); no news
#: or update checks (nothing reaches out to the network)
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension:plugin": {
        "defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}},
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}


def settings_file(prefix: str | Path = sys.prefix) -> Path:
    """This environment's JupyterLab application overrides (``<prefix>/share/jupyter/lab/settings/overrides.json``)."""
    return Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"


def configure(prefix: str | Path = sys.prefix) -> Path:
    """Make jupytext's notebook the default viewer of ``.md`` files in this environment's JupyterLab.

    Merges :data:`LAB_SETTINGS` into :func:`settings_file` (other plugins' settings and other
    viewers are kept) and writes it atomically.

    Args:
        prefix: the environment's prefix (default: the running interpreter's).

    Returns:
        The settings file.

    Raises:
        ValueError: the existing file is not a JSON object (it is left untouched).
    """
    path = settings_file(prefix)
    current = {}
    if path.exists():
        try:
            current = json.loads(path.read_text() or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); fix or remove it, then run again") from None
        if not isinstance(current, dict):
            raise ValueError(f"{path} should hold a JSON object; fix or remove it, then run again")
    for plugin, values in LAB_SETTINGS.items():
        merged = current.setdefault(plugin, {})
        for key, value in values.items():
            merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(current, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def lab_command(port: int | None = None, open_browser: bool = True, ip: str | None = None,
                extra: list[str] | None = None, root: Path = ROOT) -> list[str]:
    """The ``jupyter lab`` command line: this interpreter, root ``root``, file browser on ``notebooks/``.

    Args:
        port: the server's port (default: JupyterLab's, the first free one from 8888).
        open_browser: open the user's browser on start.
        ip: the address to listen on (default: JupyterLab's, localhost).
        extra: further ``jupyter lab`` arguments, passed on as given (e.g. ``--IdentityProvider.token=...``).
        root: the repository (the server's root folder).
    """
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root}",
           "--LabApp.default_url=/lab/tree/notebooks"]
    if port is not None:
        cmd.append(f"--ServerApp.port={port}")
    if ip is not None:
        cmd.append(f"--ServerApp.ip={ip}")
    if not open_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers: JupyterLab refuses root without it
        cmd.append("--allow-root")
    return cmd + list(extra or [])


def main(argv: list[str] | None = None) -> int:
    """``python -m hesslab.book lab``: configure the viewer and run JupyterLab until it is stopped."""
    parser = argparse.ArgumentParser(prog="python -m hesslab.book lab", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="the server's port (default: the first free one from 8888)")
    parser.add_argument("--ip", help="the address to listen on (default: localhost)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser (print the URL only)")
    parser.add_argument("extra", nargs=argparse.REMAINDER,
                        help="after --: arguments passed on to jupyter lab as given")
    args = parser.parse_args(argv)
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    missing = [name for name in ("jupyterlab", "jupytext", "ipywidgets") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"{', '.join(missing)} not installed in this environment; run 'make lab' "
              "(or pip install -e '.[book]')", file=sys.stderr)
        return 2
    try:
        path = configure()
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    print(f"chapters open as notebooks (jupytext), set in {path}")
    try:
        return subprocess.call(lab_command(args.port, not args.no_browser, args.ip, extra))
    except KeyboardInterrupt:
        return 130
