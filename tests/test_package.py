"""The package imports and carries a version."""

import helpers


def test_version() -> None:
    assert helpers.__version__.count(".") == 2
