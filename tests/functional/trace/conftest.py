"""The NetworkPolicy tests' cluster (API server, controller, OVN central with northd and SB), reused."""

from tests.functional.netpol.conftest import cluster  # noqa: F401  (fixture)
from tests.functional.netpol.conftest import module_kube  # noqa: F401  (fixture)
