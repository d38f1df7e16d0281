"""The admin tests use the node fixtures (a real origin, started nodes stopped afterwards)."""

from tests.admin.fake_node import make_admin  # noqa: F401
from tests.node.conftest import (
    nodes,  # noqa: F401 - fixtures, used by name
    origin_server,  # noqa: F401
)
