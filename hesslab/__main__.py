"""``python -m hesslab`` runs the book commands (``run``, ``build``); see :mod:`hesslab.book`."""

import sys

from .book import main

sys.exit(main())
