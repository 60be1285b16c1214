"""Fixtures shared by the tests."""
from __future__ import annotations

import pytest

from layerout.data import load_data


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled digits as the trainer loads them (seed 0), loaded once per session."""
    return load_data("digits", seed=0)
