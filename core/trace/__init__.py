"""``ovnk trace``: ovn-trace with a microflow built from the cluster, answered in Kubernetes terms.

Modules: :mod:`.parse` (ovn-trace's output, pure), :mod:`.model` (the NB/SB
rows a trace reads, pure), :mod:`.explain` (rows to Kubernetes names, through
the ``ovnk_trace_explain`` hook), :mod:`.engine` (microflow, verdict, reason)
and :mod:`.cli` (the command). Database access goes through
:mod:`ovnk.core.ovn.snapshot`.
"""
