"""``open_db_view``: a command's read-only view of the NB or SB database, against a real OVN central."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from ovnk import DbView
from ovnk import StartupError
from ovnk import open_db_view

pytestmark = pytest.mark.ovn


def settings(address: str) -> SimpleNamespace:
    """What ``config.ovnsouth`` / ``config.ovnnorth`` give (plain remotes need no TLS files)."""
    return SimpleNamespace(address=address, client_privkey="", client_cert="", client_cacert="")


def test_view_reads_plain_rows_of_the_tables_it_monitors(ovn_central: Any) -> None:
    ovn_central.sbctl("chassis-add", "ch-1", "geneve", "127.0.0.21")
    ovn_central.nbctl("ls-add", "sw0", "--", "lsp-add", "sw0", "p0")
    ovn_central.wait_northd()
    with open_db_view(settings(ovn_central.sb_address), schema="OVN_Southbound",
                      tables=("Chassis", "Encap", "Port_Binding", "Datapath_Binding")) as view:
        assert isinstance(view, DbView)
        (chassis,) = view.rows("Chassis", columns=("hostname", "encaps"))
        assert chassis.name == "ch-1" and chassis["hostname"] == ""
        encaps = view.by_uuid("Encap", columns=("ip", "type"))
        assert [(encaps[u]["type"], encaps[u]["ip"]) for u in chassis["encaps"]] == [("geneve", "127.0.0.21")]
        (binding,) = view.rows("Port_Binding", columns=("logical_port", "datapath"))
        datapath = view.by_uuid("Datapath_Binding")[binding["datapath"]]
        assert (binding["logical_port"], datapath.external_ids["name"]) == ("p0", "sw0")
        with pytest.raises(ValueError, match="IGMP_Group is not monitored"):
            view.rows("IGMP_Group")
    with open_db_view(settings(ovn_central.nb_address), schema="OVN_Northbound", tables=("Logical_Switch",)) as nb:
        assert [row.name for row in nb.rows("Logical_Switch")] == ["sw0"]


def test_view_errors_name_the_database(ovn_central: Any, tmp_path: Any) -> None:
    with pytest.raises(StartupError, match=r"OVN_Southbound database at .* has no table Nope"):
        with open_db_view(settings(ovn_central.sb_address), schema="OVN_Southbound", tables=("Nope",)):
            pass
    started = time.monotonic()
    with pytest.raises(StartupError, match="cannot reach the OVN_Southbound database at unix:"):
        with open_db_view(settings(f"unix:{tmp_path}/missing.sock"), schema="OVN_Southbound",
                          tables=("Chassis",), timeout=1):
            pass
    assert time.monotonic() - started < 10
    with pytest.raises(ValueError, match="schema must be one of"):
        with open_db_view(settings(ovn_central.sb_address), schema="Open_vSwitch", tables=("Bridge",)):
            pass
