"""``python -m hesslab.experiments.quadratic``: regenerate the measured block spectra of Cases 1–2.

See :mod:`hesslab.experiments.quadratic.spectra_files`.
"""

from hesslab.experiments.quadratic.spectra_files import main

if __name__ == "__main__":
    main()
