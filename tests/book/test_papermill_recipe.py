"""The papermill recipe of ``book/running.md`` ("One chapter with papermill") works as written.

The commands are read from that section's code blocks (so the documentation and this
test cannot drift), and the README must show the same two recipe commands. The
``jupytext`` and ``papermill`` commands run as written, with the virtual environment's
executables, from the repository root, writing into a temporary folder in place of
``/tmp``. Asserted: papermill injected exactly the ``-p`` values of the command; the
values reached the chapter's outputs (the Markdown table of the chapter equals the one
computed here from the same ``steps``, ``hidden`` and ``seed``, and differs from seed 0's;
the text states the parameter count of width ``hidden``); and the runner command of the
section (``python -m hesslab.book run ... -p NAME VALUE``) injects the same parameters.
The chapter's training run lands in the result cache (``$HESSLAB_CACHE``), so a rerun is
faster.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from hesslab.book import runner as book

pytestmark = pytest.mark.book
ROOT = Path(__file__).resolve().parents[2]
SECTION = "## One chapter with papermill"


def _commands(text: str) -> list[str]:
    """The command lines of the ``bash`` code blocks in ``text`` (continuation lines joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _recipe() -> dict[str, str]:
    """The section's commands by program: ``jupytext``, ``papermill`` and ``runner``."""
    text = (ROOT / "book" / "running.md").read_text()
    assert SECTION in text, f"book/running.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    found = {}
    for line in _commands(section):
        key = "runner" if line.startswith("python -m hesslab.book run ") else line.split()[0]
        assert key not in found, f"two {key} commands in {SECTION!r}"
        found[key] = line
    assert set(found) == {"jupytext", "papermill", "runner"}, f"{SECTION!r} has commands {found}"
    return found


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``argv`` from the repository root; on a timeout kill it with its process group (the kernel)."""
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(argv)} ran past {timeout} s:\n{out[-4000:]}")
    assert proc.returncode == 0, f"{' '.join(argv)} exited with {proc.returncode}:\n{out[-4000:]}"
    return proc


def _papermill_parameters(argv: list[str]) -> dict:
    """The ``-p NAME VALUE`` pairs of a papermill command line, read as papermill reads them."""
    pairs = [argv[i + 1:i + 3] for i, arg in enumerate(argv) if arg in ("-p", "--parameters")]
    return {name: book.parameter_value(value) for name, value in pairs}


def _layer_rows(result) -> list[str]:
    """The start of each row of the chapter's Markdown table: stage, layer blocks' share and ratio."""
    by_layer = result.summary("layer")
    return [f"| {s:.0%} | {by_layer[s]['diagonal_share']:.3f} | {by_layer[s]['per_entry_ratio']:.1f} |"
            for s in result.hessians]


def test_readme_shows_the_recipe_of_running_md():
    recipe = _recipe()
    readme = (ROOT / "README.md").read_text()
    for key in ("jupytext", "papermill"):
        assert recipe[key] in _commands(readme), f"README.md does not show book/running.md's {key} command"


def test_papermill_recipe_injects_its_parameters_into_the_outputs(tmp_path):
    recipe = _recipe()
    tmp = {}

    def local(arg: str) -> str:  # /tmp/NAME -> tmp_path/NAME
        if arg.startswith("/tmp/"):
            tmp[arg] = str(tmp_path / arg[len("/tmp/"):])
            return tmp[arg]
        return arg

    jupytext_argv = [local(a) for a in shlex.split(recipe["jupytext"])]
    papermill_argv = [local(a) for a in shlex.split(recipe["papermill"])]
    chapter = Path(jupytext_argv[jupytext_argv.index("--to") + 2]).stem
    assert chapter == "mlp_hessian", "the outputs checked below are mlp_hessian's: adapt this test"
    given = _papermill_parameters(papermill_argv)
    assert {"seed", "hidden", "steps"} <= set(given) and given["seed"] != 0, given
    bin_dir = Path(sys.executable).parent
    _run([str(bin_dir / "jupytext"), *jupytext_argv[1:]], timeout=120)
    _run([str(bin_dir / "papermill"), *papermill_argv[1:]], timeout=600)

    output = nbformat.read(papermill_argv[2], as_version=4)
    [injected] = [c for c in output.cells if "injected-parameters" in c.metadata.get("tags", [])]
    values: dict = {}
    exec(injected.source, {}, values)
    assert values == given, "papermill injected other values than the command's -p"

    texts = "".join(o.get("text", "") + o.get("data", {}).get("text/markdown", "")
                    for c in output.cells if c.cell_type == "code" for o in c.get("outputs", []))
    hidden = given["hidden"]
    assert f"({65 * hidden} of {65 * hidden + 10 * hidden + 10} parameters)" in texts, \
        "the width given with -p hidden does not reach the chapter's text"

    from hesslab.experiments.mlp_hessian import explicit_hessians

    parameters = book.chapter_parameters(chapter, "cpu") | given
    knobs = {k: parameters[k] for k in ("steps", "lr", "hidden", "seed")}
    ours = _layer_rows(explicit_hessians(**knobs, progress=False))
    seed0 = _layer_rows(explicit_hessians(**knobs | {"seed": 0}, progress=False))
    assert ours != seed0, "seed 0 and the recipe's seed give the same table: the check below proves nothing"
    for row in ours:
        assert row in texts, f"the chapter's table lacks {row!r}: -p steps/hidden/seed did not reach it"
    assert not any(row in texts for row in seed0 if row not in ours)


def test_runner_command_injects_the_same_parameters_as_the_recipe():
    recipe = _recipe()
    argv = shlex.split(recipe["runner"])
    args = book._parser().parse_args(argv[3:])
    [chapter] = args.only
    checked = book.check_overrides(book.overrides_from(args), args.only, args.profile)
    injected = book.parameters_for(chapter, args.profile) | checked[chapter]
    assert injected == _papermill_parameters(shlex.split(recipe["papermill"]))
