"""``python -m hesslab.book run|build``: see :mod:`hesslab.book.runner`."""

import sys

from hesslab.book.runner import main

sys.exit(main())
