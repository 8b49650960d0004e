import os

import matplotlib
import pytest

matplotlib.use("Agg")

# One thread count for the whole suite. sigel's automatic count follows the
# machine's load (sigel._settings.default_threads), and torch sums in another
# order with 1 and with 2 threads, so two calls that should agree to the last
# bit could differ by 1e-9 when the load changed between them (it happened in
# CI: test_embed_with_controls_is_what_svg_scores). Tests of the thread logic
# itself remove the variable (monkeypatch) and restore it afterwards.
os.environ.setdefault("SIGEL_NUM_THREADS", "1")


def require_backend() -> bool:
    """True when CI demands every backend (R, rpy2, ...) be present: no skipping."""
    return os.environ.get("SIGEL_REQUIRE_BACKEND") == "1"


def skip_or_fail(reason: str):
    """Skip locally, but fail under SIGEL_REQUIRE_BACKEND=1."""
    if require_backend():
        pytest.fail(f"SIGEL_REQUIRE_BACKEND=1 but: {reason}")
    pytest.skip(reason)


# Acceptance tests of work that is not finished yet. They run and report
# (XFAIL / XPASS) but do not fail the suite; each is named in the closing
# notes of its issue. Remove an entry as soon as its test passes reliably.
KNOWN_UNFINISHED: dict = {}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for key, reason in KNOWN_UNFINISHED.items():
            if item.nodeid == key or item.nodeid.startswith((key + "::", key + "[")):
                item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
