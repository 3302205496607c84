"""Core's implementation of ``ovnk_nb_commit``: the blocking commit itself.

It is ``trylast`` so plugins can wrap it (timing, tracing) but never replace it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ovnk.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from ovnk.core.ovn.txn import NbTxn


@hookimpl(trylast=True)
def ovnk_nb_commit(txn: NbTxn) -> str:
    """Commit ``txn`` on the ovsdbapp connection thread and return its outcome."""
    outcome: str = txn.commit_blocking()
    return outcome
