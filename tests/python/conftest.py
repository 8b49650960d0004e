import os

import matplotlib
import pytest

matplotlib.use("Agg")


def require_backend() -> bool:
    """True when CI demands every backend (R, rpy2, ...) be present: no skipping."""
    return os.environ.get("SIGEL_REQUIRE_BACKEND") == "1"


def skip_or_fail(reason: str):
    """Skip locally, but fail under SIGEL_REQUIRE_BACKEND=1."""
    if require_backend():
        pytest.fail(f"SIGEL_REQUIRE_BACKEND=1 but: {reason}")
    pytest.skip(reason)
