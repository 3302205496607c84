"""The lab: real OVN and Kubernetes components started on this machine.

Used by the test bed (pytest fixtures), the benchmarks and ``ovnk sandbox``.
Every daemon runs in the foreground under our own ``Popen`` so we know its pid
and stop exactly what we started; every file lives in one work directory.
"""
