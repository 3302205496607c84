"""One-shot, read-only copies of whole tables, for tools (``ovnk trace``) rather than controllers.

A tool connects, copies the rows it needs into plain values and disconnects;
it never writes. Running ``ovn-trace`` (which reads the Southbound database
itself) lives here too, so every OVSDB access stays in :mod:`ovnk.core.ovn`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from collections.abc import Sequence

from ovnk.core.errors import OvnkError
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.ovn.connection import SslFiles
from ovnk.core.ovn.reader import RowSnapshot
from ovnk.core.ovn.reader import snapshot

#: Seconds ovn-trace may take (it reads the whole SB once; a big cluster's SB takes a while).
OVN_TRACE_TIMEOUT = 120.0


def read_tables(*, remote: str, schema: str, tables: Mapping[str, Sequence[str]], ssl: SslFiles | None = None,
                timeout: float = 30.0) -> dict[str, list[RowSnapshot]]:
    """Every row of each table in ``tables`` with the listed columns (``name`` and ``external_ids`` always,
    where the table has them); tables the server's schema lacks come back empty.

    :raises StartupError: the database cannot be reached within ``timeout``.
    """
    client = OvsdbClient(remote=remote, schema=schema, name=f"{schema}-snapshot", leader_only=False,
                         tables=tuple(tables), ssl=ssl, timeout=timeout)
    client.start(timeout=timeout)
    try:
        result: dict[str, list[RowSnapshot]] = {}
        with client.locked() as idl:
            for table, columns in tables.items():
                if table not in idl.tables:
                    result[table] = []
                    continue
                present = [c for c in columns if c in idl.tables[table].columns]
                result[table] = [snapshot(table, row, present) for row in idl.tables[table].rows.values()]
        return result
    finally:
        client.stop()


def ovn_trace(*, sb_remote: str, datapath: str, microflow: str, ct_states: Sequence[str] = (),
              lb_dst: str | None = None, ssl: SslFiles | None = None,
              timeout: float = OVN_TRACE_TIMEOUT, binary: str | None = None) -> str:
    """``ovn-trace --detailed`` of ``microflow`` entering ``datapath``; its output.

    :param ct_states: one ``--ct`` value per connection-tracking step, in order (``new``, ``est``...).
    :param lb_dst: ``IP[:PORT]`` a load balancer should pick (``--lb-dst``).
    :param binary: the ``ovn-trace`` to run (default: the one on ``PATH``); it must come from the
        OVN release that built the SB's logical flows.
    :raises OvnkError: ``ovn-trace`` is missing or fails (its message included).
    """
    binary = binary or shutil.which("ovn-trace")
    if binary is None:
        raise OvnkError("ovn-trace is not installed (Debian package ovn-central or ovn-common)")
    argv = [binary, f"--db={sb_remote}", "--detailed", *(f"--ct={s}" for s in ct_states)]
    if lb_dst:
        argv.append(f"--lb-dst={lb_dst}")
    if ssl is not None:
        argv += [f"--private-key={ssl.private_key}", f"--certificate={ssl.certificate}", f"--ca-cert={ssl.ca_cert}"]
    argv += [datapath, microflow]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise OvnkError(f"ovn-trace did not finish within {timeout:g}s") from exc
    if res.returncode != 0:
        raise OvnkError(f"ovn-trace failed: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout
