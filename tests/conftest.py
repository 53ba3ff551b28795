"""Fixtures every CPU test shares."""
import secrets

import numpy as np
import pytest


@pytest.fixture
def rng():
    """A fresh generator per test; its seed is printed, so pytest shows it with a failure."""
    seed = secrets.randbits(63)
    print(f"numpy seed={seed}")  # rerun with np.random.default_rng(seed)
    return np.random.default_rng(seed)
