"""Fixtures every blocklist test module shares."""

from __future__ import annotations

import pytest

from proxy.blocklist.format import generate_keypair


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    """A signing keypair of the module's own, (private PEM, public PEM)."""
    return generate_keypair()
