"""A read-only view of an OVN database for commands (``ovnk <plugin> ...``), not for the controller.

The controller talks to the Northbound database only. A command that shows what
OVN made of it (the IGMP groups ovn-controller learnt, port bindings, chassis)
opens its own short-lived connection to the database the invocation's
configuration names (``[ovnsouth] address``, ``--sb-address``), monitors only the
tables it asks for, reads plain copies of their rows and closes::

    from ovnk import command_config, open_db_view

    with open_db_view(command_config().ovnsouth, schema="OVN_Southbound",
                      tables=("IGMP_Group", "Port_Binding")) as view:
        for group in view.rows("IGMP_Group", columns=("address", "ports")):
            ...

Rows are :class:`~ovnk.core.ovn.reader.RowSnapshot` copies (references become
uuid strings), so nothing outside the view ever holds an IDL row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any

from ovnk.core.errors import StartupError
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.ovn.connection import SslFiles
from ovnk.core.ovn.reader import RowSnapshot
from ovnk.core.ovn.reader import snapshot

#: The schema name of each ``[ovnnorth]``/``[ovnsouth]`` database a command may open.
SCHEMAS = ("OVN_Northbound", "OVN_Southbound")


class DbView:
    """Plain copies of the rows of the tables a command opened (see :func:`open_db_view`)."""

    def __init__(self, client: OvsdbClient, tables: Sequence[str]) -> None:
        self._client = client
        self.tables = tuple(tables)

    def rows(self, table: str, *, columns: Iterable[str] = ()) -> list[RowSnapshot]:
        """Every row of ``table`` with ``columns`` copied (``name`` and ``external_ids`` always are).

        :raises ValueError: ``table`` is not one of the tables the view monitors.
        """
        if table not in self.tables:
            raise ValueError(f"{table} is not monitored by this view (tables: {', '.join(self.tables)})")
        cols = tuple(columns)
        with self._client.locked() as idl:
            return [snapshot(table, row, cols) for row in idl.tables[table].rows.values()]

    def by_uuid(self, table: str, *, columns: Iterable[str] = ()) -> dict[str, RowSnapshot]:
        """The rows of ``table`` by uuid: resolves the uuid strings other rows' references hold."""
        return {row.uuid: row for row in self.rows(table, columns=columns)}


def _ssl(settings: Any) -> SslFiles | None:
    address = str(settings.address)
    if not (address.startswith("ssl:") or ",ssl:" in address):
        return None
    if not (settings.client_privkey and settings.client_cert and settings.client_cacert):
        raise StartupError(f"{address} is an ssl: remote but client-privkey/client-cert/client-cacert are not all set")
    return SslFiles(private_key=settings.client_privkey, certificate=settings.client_cert,
                    ca_cert=settings.client_cacert)


@contextlib.contextmanager
def open_db_view(settings: Any, *, schema: str, tables: Sequence[str], timeout: float = 10.0) -> Iterator[DbView]:
    """Connect to the database of ``settings`` (``config.ovnnorth`` or ``config.ovnsouth``), read-only.

    :param settings: the database's settings section (address, client TLS files).
    :param schema: ``OVN_Northbound`` or ``OVN_Southbound``.
    :param tables: the tables to monitor (only these can be read).
    :param timeout: seconds to wait for the server before giving up.
    :raises StartupError: the database cannot be reached within ``timeout``, or its schema has no
        such table (the message names the database and its address).
    """
    if schema not in SCHEMAS:
        raise ValueError(f"schema must be one of {', '.join(SCHEMAS)}, not {schema!r}")
    # Any RAFT member serves reads: no need to wait for the leader.
    client = OvsdbClient(remote=str(settings.address), schema=schema, name="view", tables=tuple(tables),
                         leader_only=False, ssl=_ssl(settings), timeout=timeout)
    client.start(timeout=timeout)
    try:
        yield DbView(client, tables)
    finally:
        client.stop()
