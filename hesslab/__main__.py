"""``python -m hesslab``: ``diagnose`` (:mod:`hesslab.experiments.diagnose`) or the book commands (``run``, ``build``; :mod:`hesslab.book.runner`)."""

import sys

if sys.argv[1:2] == ["diagnose"]:
    from hesslab.experiments.diagnose import main as diagnose_main

    sys.exit(diagnose_main(sys.argv[2:]))

from hesslab.book.runner import main  # noqa: E402

sys.exit(main())
