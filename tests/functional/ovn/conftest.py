"""Fixtures for OVN engine tests: an NB client and a transaction manager on a fresh central."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.ovn.ids import OwnerType
from ovnk.core.ovn.txn import TxnManager

CONTROLLER = "default-network-controller"

NODE_SWITCH = OwnerType(name="Node", table="Logical_Switch", keys=("name",))
POD_PORT = OwnerType(name="Pod", table="Logical_Switch_Port", keys=("name",))
TEST_PG = OwnerType(name="TestGroup", table="Port_Group", keys=("name",))
TEST_ACL = OwnerType(name="TestACL", table="ACL", keys=("name", "rule-index"))


@pytest.fixture
def nb_client(ovn_central: Any) -> Iterator[OvsdbClient]:
    client = OvsdbClient(remote=ovn_central.nb_address, schema="OVN_Northbound", name="nb", timeout=20)
    client.start()
    yield client
    client.stop()


@pytest.fixture
def txns(nb_client: OvsdbClient) -> TxnManager:
    return TxnManager(nb_client, pm=None, controller=CONTROLLER, timeout=20)
