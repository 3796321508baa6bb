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


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    from_env = {r.replace(" ", "") for r in pip if not r.startswith("-e")}
    from_pyproject = {r.replace(" ", "") for r in project["dependencies"]}
    assert from_env == from_pyproject, (
        f"only in environment.yml: {sorted(from_env - from_pyproject)}; "
        f"only in pyproject.toml: {sorted(from_pyproject - from_env)}"
    )
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])


def test_docstrings_follow_google_convention():
    result = subprocess.run(
        [sys.executable, "-m", "pydocstyle", "--convention=google", "--add-ignore=D105,D107", str(ROOT / "hesslab")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:]
