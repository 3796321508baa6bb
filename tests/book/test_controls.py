"""Every slider and picker of every chapter changes the figure it drives, tested in a live kernel.

Each chapter with interactive controls (a code cell calling ``live_figure``) is executed at
the ``smoke`` profile, with papermill's injected parameters, in one kernel with plain
nbclient, up to its last widget cell. The controls are then found the way a reader sees
them: every box the chapter displayed, walked down to its value widgets and its ``Output``.
Each control is moved as the JupyterLab frontend moves it, by a ``comm_msg`` ``update`` of
the synced trait (``index`` for a drop-down or selection slider, ``value`` for a slider),
to a value different from its current one. Asserted for every control: the kernel accepts
the update (the control's value changed), the ``Output`` it drives holds a new PNG (not the
same bytes) and no traceback (``live_figure`` shows a failing redraw's traceback in place of
the figure).

A chapter that gains a control is tested without any change here; a control that drives
nothing fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from hesslab.experiments.profiles import parameters_for

pytestmark = pytest.mark.book
ROOT = Path(__file__).resolve().parents[2]
#: seconds one chapter cell may run (the smoke profile's cell limit)
CELL_LIMIT = 300
#: marks the probe's JSON line in a cell's stdout
TAG = "HESSLAB-CONTROLS "

#: runs in the chapter's kernel: the displayed control boxes, their controls and the figure each drives
PROBE = r'''
import base64 as _b64, hashlib as _hl, json as _json
import ipywidgets as _w


#: value widgets that show a value but are not moved by the reader
_DISPLAY_ONLY = (_w.Output, _w.Label, _w.HTML, _w.HTMLMath, _w.FloatProgress, _w.IntProgress, _w.Valid)


def _descendants(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _descendants(child)


def _digest(output):
    """sha256 of the Output's PNGs, and any error text it shows."""
    pngs = [o["data"]["image/png"] for o in output.outputs if "image/png" in o.get("data", {})]
    errors = [o.get("text", "") for o in output.outputs if o.get("name") == "stderr" or o.get("output_type") == "error"]
    return {"png": _hl.sha256("".join(pngs).encode()).hexdigest() if pngs else None,
            "png_head": _b64.b64decode(pngs[0])[:4].hex() if pngs else None, "errors": errors}


def _new_value(control):
    """The synced trait, its current value and a different valid value, as the frontend would send."""
    if "index" in control.keys and getattr(control, "options", None) is not None:
        n = len(control.options)
        return "index", control.index, (control.index + 1) % n if n > 1 else None
    if isinstance(control, _w.FloatLogSlider):
        exponent = control.min + round((control.max - control.min) / 2 / control.step) * control.step
        new = control.base ** exponent
        if abs(new - control.value) <= 1e-9 * abs(new):
            new = control.base ** control.min
        return "value", control.value, new
    if isinstance(control, (_w.FloatSlider, _w.IntSlider)):
        new = control.min + round((control.max - control.min) / 2 / control.step) * control.step
        if new == control.value:
            new = control.min
        return "value", control.value, new
    if isinstance(control, (_w.Checkbox, _w.ToggleButton)):
        return "value", control.value, not control.value
    raise TypeError(f"no rule to move a {type(control).__name__}; add one to tests/book/test_controls.py")


def _boxes():
    widgets = list(_w.Widget._active_widgets.values())
    boxes = [w for w in widgets if isinstance(w, _w.Box)]
    inner = {id(c) for b in boxes for c in b.children}
    report = []
    for root in (b for b in boxes if id(b) not in inner):
        parts = list(_descendants(root))
        outputs = [p for p in parts if isinstance(p, _w.Output)]
        if not outputs:  # e.g. a progress bar: nothing a reader moves
            continue
        controls = [p for p in parts if isinstance(p, _w.ValueWidget) and not isinstance(p, _DISPLAY_ONLY)]
        report.append({"outputs": [o.model_id for o in outputs], "figure": [_digest(o) for o in outputs],
                       "controls": [dict(zip(("key", "current", "new"), _new_value(c)), id=c.model_id,
                                         kind=type(c).__name__, description=c.description) for c in controls]})
    return report


def _state(ids):
    """Each widget's digest (an Output) or synced value (a control), by model id."""
    out = {}
    for model_id in ids:
        widget = _w.Widget._active_widgets[model_id]
        out[model_id] = _digest(widget) if isinstance(widget, _w.Output) else \
            getattr(widget, "index", None) if "index" in widget.keys else widget.value
    return out
'''


def _chapters_with_controls() -> list[str]:
    return sorted(p.stem for p in (ROOT / "notebooks").glob("*.md") if "live_figure(" in p.read_text())


def _probe(client, nb, source: str):
    """Run ``source`` as a new cell in the chapter's kernel; the JSON it printed after :data:`TAG`."""
    import nbformat

    cell = nbformat.v4.new_code_cell(source)
    nb.cells.append(cell)
    client.execute_cell(cell, len(nb.cells) - 1)
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert not errors, "\n".join(errors[0].traceback)
    [line] = [ln for ln in text.splitlines() if ln.startswith(TAG)]
    return json.loads(line[len(TAG):])


def test_every_chapter_with_a_widget_is_found():
    found = _chapters_with_controls()
    assert {"blockwise", "quadratic", "heterogeneous_mlp"} <= set(found), found


@pytest.mark.parametrize("chapter", _chapters_with_controls())
def test_every_control_changes_its_figure(chapter, tmp_path):
    jupytext.write(jupytext.read(ROOT / "notebooks" / f"{chapter}.md"), tmp_path / "chapter.ipynb")
    nb = load_notebook_node(str(tmp_path / "chapter.ipynb"))  # papermill's reading: cells get their tags
    nb = parameterize_notebook(nb, parameters_for(chapter, "smoke"), kernel_name="python3", language="python")
    last = max(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "live_figure(" in c.source)
    del nb.cells[last + 1:]
    client = NotebookClient(nb, timeout=CELL_LIMIT, kernel_name="python3", startup_timeout=120,
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    with client.setup_kernel():
        for index, cell in enumerate(list(nb.cells)):
            if cell.cell_type == "code":
                client.execute_cell(cell, index)
        boxes = _probe(client, nb, PROBE + f"\nprint({TAG!r} + _json.dumps(_boxes()))")
        boxes = [b for b in boxes if b["controls"]]
        assert boxes, f"{chapter}: no displayed box with controls"
        moved = []
        for box in boxes:
            assert len(box["outputs"]) == 1, f"{chapter}: a control box should drive one figure, not {box['outputs']}"
            [output] = box["outputs"]
            [before] = box["figure"]
            assert before["png"] and not before["errors"], f"{chapter}: no figure before any control moved"
            for control in box["controls"]:
                name = f"{chapter}: {control['kind']} {control['description']!r}"
                assert control["new"] is not None, f"{name} has a single option: nothing to pick"
                # what the JupyterLab frontend sends when the reader moves the control
                client.kc.shell_channel.send(client.kc.session.msg("comm_msg", {
                    "comm_id": control["id"],
                    "data": {"method": "update", "state": {control["key"]: control["new"]}, "buffer_paths": []}}))
                after = _probe(client, nb, f"print({TAG!r} + _json.dumps(_state([{control['id']!r}, {output!r}])))")
                value, figure = after[control["id"]], after[output]
                assert value != control["current"], f"{name}: the kernel ignored the update to {control['new']!r}"
                assert not figure["errors"], f"{name}: redrawing failed:\n{''.join(figure['errors'])[-3000:]}"
                assert figure["png_head"] == b"\x89PNG".hex(), f"{name}: the Output holds no PNG after the move"
                assert figure["png"] != before["png"], f"{name}: moving it to {control['new']!r} left the figure unchanged"
                before = figure
                moved.append(name)
    assert moved

