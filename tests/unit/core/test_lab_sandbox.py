"""Sandbox helpers that need no running sandbox."""

from __future__ import annotations

from pathlib import Path

from ovnk_lab.sandbox import Sandbox
from ovnk_lab.sandbox import copy_logs


def test_copy_logs_copies_files_and_skips_the_kubelets_dangling_container_links(tmp_path: Path) -> None:
    workdir = tmp_path / "box"
    pods = workdir / "nodes" / "node-1" / "log" / "pods" / "ns_p_uid" / "c"
    pods.mkdir(parents=True)
    (pods / "0.log").write_text("container output\n")
    (workdir / "log").mkdir()
    (workdir / "log" / "ovnk-controller-0.log").write_text("controller\n")
    containers = workdir / "nodes" / "node-1" / "log" / "containers"
    containers.mkdir()
    # The kubelet links /var/log/containers/*.log to /var/log/pods/..., a path of the node's mount namespace.
    (containers / "p_ns_c-abc.log").symlink_to("/var/log/pods/ns_p_uid/c/0.log-does-not-exist-here")
    dest = tmp_path / "artefacts"

    copy_logs(Sandbox(workdir, prefix="unitlogs"), dest)

    assert (dest / "log" / "ovnk-controller-0.log").read_text() == "controller\n"
    assert (dest / "nodes" / "node-1" / "log" / "pods" / "ns_p_uid" / "c" / "0.log").read_text() == "container output\n"
    assert not (dest / "nodes" / "node-1" / "log" / "containers" / "p_ns_c-abc.log").exists()


def test_sandbox_up_offers_tls_and_a_subnet_and_rejects_a_bad_subnet_clearly(run_cli) -> None:
    usage = run_cli("sandbox", "up", "--help")
    assert usage.exit_code == 0, usage.output
    assert "--ssl" in usage.output and "--subnet" in usage.output and "--db-cluster" in usage.output
    result = run_cli("sandbox", "--prefix", "unitbad", "up", "--subnet", "not-a-cidr")
    assert result.exit_code == 1
    assert "ovnk: error: bad --subnet 'not-a-cidr'" in result.output
