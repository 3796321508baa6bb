"""The book's wing: the chapter runner, plots and widgets.

- :mod:`hesslab.book.runner`: executes the chapters with papermill under a profile and
  builds the HTML with jupyter-book (``python -m hesslab.book run|build``);
- :mod:`hesslab.book.plotting`: the book's figure style and the figures shared by chapters;
- :mod:`hesslab.book.interactive`: figures that follow widget sliders;
- :mod:`hesslab.book.lab`: JupyterLab on the book's environment, chapters opening as
  notebooks (``python -m hesslab.book lab``, ``make lab``).

Nothing here is imported by ``import hesslab``; the book's toolchain (papermill,
jupyter-book, matplotlib, ipywidgets) is the ``[book]`` extra.
"""

from hesslab.book.runner import ChapterRun, build, chapters, execute_chapter, main, run

__all__ = ["ChapterRun", "build", "chapters", "execute_chapter", "main", "run"]
