"""``python -m hesslab.book run|build|lab``: see :mod:`hesslab.book.runner` and :mod:`hesslab.book.lab`."""

import sys

if sys.argv[1:2] == ["lab"]:
    from hesslab.book.lab import main

    sys.exit(main(sys.argv[2:]))

from hesslab.book.runner import main  # noqa: E402

sys.exit(main())
