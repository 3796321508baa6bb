"""``python -m hesslab`` runs the book commands (``run``, ``build``); see :mod:`hesslab.book.runner`."""

import sys

from hesslab.book.runner import main

sys.exit(main())
