"""Project hygiene: dependency lists agree, docstrings follow the Google convention."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_installs_what_make_test_installs():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pip == ["-e .[test]"], "environment.yml must install the package with the extras `make test` uses"
    assert "-e \".[test]\"" in (ROOT / "Makefile").read_text()
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])


def test_core_install_is_light_and_extras_chain_up():
    """``pip install hesslab`` pulls the numerical core only; the book and tests are extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    assert core == {"torch", "numpy", "scipy", "pandas", "tqdm"}, core
    extras = project["optional-dependencies"]
    assert "hesslab[experiments]" in extras["book"] and "hesslab[book]" in extras["test"]
    book_tools = {_name(r) for r in extras["book"]}
    assert {"matplotlib", "papermill", "jupyter-book", "ipywidgets"} <= book_tools


def test_docstrings_follow_google_convention():
    result = subprocess.run(
        [sys.executable, "-m", "pydocstyle", "--convention=google", "--add-ignore=D105,D107", str(ROOT / "hesslab")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:]
