"""Execute one chapter notebook with papermill under time limits (the worker of :mod:`hesslab.book.runner`).

Run by :func:`hesslab.book.runner.execute_chapter` as ``python _worker.py JOB.json`` in a process
of its own (its own session), so that the runner can kill it and its kernel if it ever
overruns. This file is run by path and imports nothing from ``hesslab`` (whose ``__init__``
imports torch): it starts in well under a second.

The job file holds ``input``, ``output`` (notebook paths), ``cwd`` (the kernel's working directory),
``parameters``, ``kernel_name``, ``cell_limit`` and ``chapter_limit`` (seconds), ``status``
and ``result`` (JSON paths written by this worker).

* Every cell runs under ``min(cell_limit, time left of chapter_limit)`` (nbclient's
  ``timeout_func``); kernel start-up (60 s) and shutdown are bounded by nbclient and
  jupyter_client. After a failure the kernel's process group is killed at once; after a
  success the kernel gets a shutdown request and :data:`SHUTDOWN_WAIT` seconds to exit
  before SIGTERM and SIGKILL.
* ``status`` is rewritten at the start of every cell: the kernel's pid and process group
  and the cell being executed (for the runner, should it have to kill this worker).
* ``result`` is written at the end: ``ok``, ``failure`` (``""``, ``"error"``,
  ``"cell-timeout"``, ``"chapter-timeout"``, ``"dead-kernel"``), ``error`` and ``cell``.

**Output widgets.** nbclient mimics a frontend for ``ipywidgets.Output``: output captured
with ``with output:`` is recorded in the widget, and the mimic sends every change back to
the kernel as a ``comm_msg`` on the shell channel, *while* nbclient waits on that same
socket for the cell's ``execute_reply``. jupyter_client's ``Session.send`` writes to the
asyncio socket through a blocking shadow socket, which drains the socket's
edge-triggered ZMQ_FD notification without telling pyzmq's asyncio layer; a reply that
arrived during that send is then never noticed: nbclient waits until its timeout (forever
without one) on an idle kernel. The mimic used here (:class:`RecordingOutputWidget`)
records captured output exactly as nbclient's does but sends nothing to the kernel, so
nbclient never writes to the shell socket while it waits on it. (The chapters themselves
no longer capture figures through ``Output``: see :mod:`hesslab.book.interactive`.)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

#: seconds jupyter_client gives a kernel to exit after a shutdown request before SIGTERM
#: (at half of it) and SIGKILL (at all of it) to its process group
SHUTDOWN_WAIT = 4.0


def _write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _first_line(source: str) -> str:
    return next((line.strip() for line in source.splitlines() if line.strip()), "")


def main(spec_path: str) -> int:
    """Execute the chapter described by the JSON file ``spec_path``; write its result; return 0."""
    spec = json.loads(Path(spec_path).read_text())
    import papermill as pm
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import ensure_event_loop
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.output_widget import OutputWidget
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.log import logger
    from papermill.utils import merge_kwargs, remove_args

    class RecordingOutputWidget(OutputWidget):
        """nbclient's ``ipywidgets.Output`` mimic without the messages back to the kernel (see the module docstring)."""

        def sync_state(self) -> None:
            """Record only: do not send the outputs to the kernel on the shell channel."""

    class Client(PapermillNotebookClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.widget_registry = {"@jupyter-widgets/output": {"OutputModel": RecordingOutputWidget}}

    class Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            # papermill's NBClientEngine.execute_managed_notebook with our client class
            kwargs = remove_args(["input_path"], **kwargs)
            safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
            final_kwargs = merge_kwargs(safe_kwargs, timeout=execution_timeout or kwargs.get("timeout"),
                                        startup_timeout=start_timeout, kernel_name=kernel_name, log=logger,
                                        log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file)
            return Client(nb_man, **final_kwargs).execute()

    papermill_engines.register("hesslab", Engine)

    cell_limit, chapter_limit = float(spec["cell_limit"]), float(spec["chapter_limit"])
    deadline = time.monotonic() + chapter_limit
    km = AsyncKernelManager(kernel_name=spec["kernel_name"])
    km.shutdown_wait_time = SHUTDOWN_WAIT
    state: dict = {"cell": None, "bound": "cell", "code_cells": 0}

    def timeout_for(cell) -> float:
        left = deadline - time.monotonic()
        state["bound"] = "chapter" if left < cell_limit else "cell"
        return max(0.1, min(cell_limit, left))  # never 0: nbclient reads 0 as "no timeout"

    def on_cell_start(cell, cell_index) -> None:
        if cell.cell_type != "code":
            return
        if "injected-parameters" not in cell.metadata.get("tags", []):
            state["code_cells"] += 1
            number = state["code_cells"]
        else:
            number = None  # papermill's injected parameters
        state["cell"] = {"index": cell_index, "number": number, "source": _first_line(cell.source)}
        provisioner = km.provisioner
        _write_json(spec["status"], {"kernel_pid": getattr(provisioner, "pid", None),
                                     "kernel_pgid": getattr(provisioner, "pgid", None), "cell": state["cell"]})

    result = {"ok": False, "failure": "error", "error": "", "cell": None}
    try:
        pm.execute_notebook(spec["input"], spec["output"], parameters=spec["parameters"], engine_name="hesslab",
                            kernel_name=spec["kernel_name"], km=km, cwd=spec["cwd"], progress_bar=False,
                            execution_timeout=max(1, int(cell_limit + 0.999)), timeout_func=timeout_for,
                            on_cell_start=on_cell_start)
        result.update(ok=True, failure="")
    except pm.PapermillExecutionError as err:
        result.update(error=f"{err.ename}: {err.evalue}", cell=state["cell"])
    except CellTimeoutError as err:
        if "IOPub" in str(err):  # the reply came but its outputs did not within nbclient's iopub_timeout
            result.update(error=str(err).splitlines()[0], cell=state["cell"])
        else:
            result.update(failure=f"{state['bound']}-timeout", error=str(err).splitlines()[0], cell=state["cell"])
    except DeadKernelError as err:
        result.update(failure="dead-kernel", error=str(err), cell=state["cell"])
    except Exception as err:  # kernel did not start, bad parameters, ...
        result.update(error=f"{type(err).__name__}: {err}", cell=state["cell"])
    finally:
        # nbclient leaves a kernel manager it was given alone: shut the kernel down here, at
        # once after a failure (the kernel may be stuck), politely after a success
        if km.has_kernel:
            try:
                ensure_event_loop().run_until_complete(km.shutdown_kernel(now=not result["ok"]))
            except Exception as err:
                print(f"hesslab book worker: could not shut the kernel down: {err!r}", file=sys.stderr)
    _write_json(spec["result"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
