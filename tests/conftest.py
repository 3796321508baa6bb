"""Fixtures shared by every test folder (the model cases themselves are in ``cases.py``)."""

from __future__ import annotations

import pytest

from cases import CASES, Problem


@pytest.fixture(params=list(CASES))
def case(request) -> Problem:
    """Each tiny model family in turn."""
    return CASES[request.param]()
