"""``python -m hesslab.book lab`` (``make lab``): the viewer setting it writes and the command it runs.

The live server with a browser is tested in ``test_live_lab.py``; here, without starting
anything: the setting is merged into this environment's JupyterLab overrides without losing
other settings, a corrupt file is refused and left as it was, and the command line starts
JupyterLab on the repository with the file browser on ``notebooks/``.
"""

import json
import subprocess
import sys

import pytest

from hesslab.book import lab


def test_configure_merges_the_viewer_setting_into_existing_overrides(tmp_path):
    path = lab.settings_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},
                                "@jupyterlab/docmanager-extension:plugin": {
                                    "defaultViewers": {"python": "Jupytext Notebook"}, "autosave": False}}))
    assert lab.configure(tmp_path) == path
    settings = json.loads(path.read_text())
    assert settings["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Dark"}
    docs = settings["@jupyterlab/docmanager-extension:plugin"]
    assert docs["autosave"] is False
    assert docs["defaultViewers"] == {"python": "Jupytext Notebook", "markdown": "Jupytext Notebook",
                                      "myst": "Jupytext Notebook"}
    assert settings["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    lab.configure(tmp_path)  # idempotent
    assert json.loads(path.read_text()) == settings
    assert [p.name for p in path.parent.iterdir()] == ["overrides.json"], "a temporary file was left behind"


def test_configure_creates_the_file_and_refuses_a_corrupt_one(tmp_path):
    path = lab.configure(tmp_path / "fresh")
    assert json.loads(path.read_text()) == lab.LAB_SETTINGS
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        lab.configure(tmp_path / "fresh")
    assert path.read_text() == "{not json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        lab.configure(tmp_path / "fresh")


def test_lab_command_starts_jupyterlab_on_the_repository(tmp_path):
    cmd = lab.lab_command(port=9999, open_browser=False, ip="127.0.0.1", extra=["--foo=1"], root=tmp_path)
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={tmp_path}" in cmd and "--LabApp.default_url=/lab/tree/notebooks" in cmd
    assert {"--ServerApp.port=9999", "--ServerApp.ip=127.0.0.1", "--no-browser"} <= set(cmd)
    assert cmd[-1] == "--foo=1"
    assert "--no-browser" not in lab.lab_command()


def test_lab_subcommand_is_reachable_from_the_book_cli():
    result = subprocess.run([sys.executable, "-m", "hesslab.book", "lab", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--no-browser" in result.stdout
