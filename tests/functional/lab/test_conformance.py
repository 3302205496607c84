"""The pure parts of ``ovnk sandbox conformance`` and its cluster DNS: the skip list (equal to
docs/conformance.md's table), JUnit results and their summary, the e2e images' contents (their
host programs run from the image's own files), and the DNS syncer against the real API server and
a real dnsmasq."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ovnk.plugins.egressfirewall.dns import NXDOMAIN
from ovnk.plugins.egressfirewall.dns import DnsClient
from ovnk_lab import cluster_dns
from ovnk_lab import conformance
from ovnk_lab import e2e_images
from ovnk_lab import images
from ovnk_lab.outside import Dnsmasq
from ovnk_lab.procs import free_port

# -- the skip list ---------------------------------------------------------------------------


def test_the_skip_list_in_the_docs_is_the_codes() -> None:
    documented = conformance.skips_from_doc(conformance.DOC.read_text())
    assert documented == list(conformance.SKIPS)


def test_skip_patterns_select_what_they_say_and_leave_the_core_specs() -> None:
    regex = re.compile(conformance.skip_regex(conformance.SKIPS, r"my own"))
    skipped = [
        "[sig-network] DNS should provide DNS for services  [Conformance]",
        "[sig-network] Services should be able to create an internal type load balancer [Slow]",
        "[sig-network] SCTP [Feature:SCTP] [LinuxOnly] should allow creating a basic SCTP service with pod and "
        "endpoints",
        "[sig-network] Proxy version v1 should proxy through a service and a pod  [Conformance]",
        "[sig-network] Networking should provide Internet connection for containers [Feature:Networking-IPv4]",
        "[sig-network] Services something my own",
        "[sig-network] Networking Granular Checks: Services should be able to handle large requests: udp",
        "[sig-network] Networking Granular Checks: Services should function for service endpoints using "
        "hostNetwork",
    ]
    kept = [
        "[sig-network] Services should serve a basic endpoint from pods  [Conformance]",
        "[sig-network] NetworkPolicy [LinuxOnly] NetworkPolicy between server and client should enforce policy "
        "to allow traffic only from a different namespace, based on NamespaceSelector",
        "[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http "
        "[NodeConformance] [Conformance]",
        "[sig-network] Proxy version v1 should proxy logs on node using proxy subresource  [Conformance]",
        "[sig-network] Conntrack should be able to preserve UDP traffic when server pod cycles for a NodePort "
        "service",
        "[sig-network] Networking Granular Checks: Services should function for pod-Service: udp",
        "[sig-network] Networking Granular Checks: Services should be able to handle large requests: http",
        "[sig-network] Networking should provide unchanging, static URL paths for kubernetes api services",
    ]
    assert [name for name in skipped if not regex.search(name)] == []
    assert [name for name in kept if regex.search(name)] == []
    reason = conformance.skip_reason(skipped[0], conformance.SKIPS)
    assert reason is not None and "CoreDNS" in reason
    assert conformance.skip_reason(kept[0], conformance.SKIPS) is None


def test_the_runners_internet_is_a_stand_in_in_its_namespace(tmp_path: Path) -> None:
    """The runner's prefix sees google.com on the external namespace's own server; the host sees nothing new."""
    netns = f"ovnk-standin-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        sandbox: Any = SimpleNamespace(cluster=SimpleNamespace(underlay=SimpleNamespace(ext_netns=netns)))
        hosts_before = Path("/etc/hosts").read_bytes()
        with conformance.internet_stand_in(sandbox, tmp_path) as prefix:
            for name in conformance.INTERNET_NAMES:
                page = subprocess.run([*prefix, "curl", "-fsS", "--max-time", "5", f"http://{name}/"],
                                      capture_output=True, text=True, check=False)
                assert page.returncode == 0 and "stand-in" in page.stdout, page.stderr
            resolved = subprocess.run([*prefix, "getent", "hosts", "localhost"], capture_output=True, text=True,
                                      check=False)
            assert resolved.returncode == 0, "the host's own names still resolve"
            assert Path("/etc/hosts").read_bytes() == hosts_before, "only the runner's mount namespace sees it"
            unreached = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sS", "--max-time", "2",
                                        "http://10.1.2.3/"], capture_output=True, check=False)
            assert unreached.returncode != 0, "nothing else is reachable from the namespace"
        after = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "--", "curl", "-sS", "--max-time", "2",
                                "http://127.0.0.1/"], capture_output=True, check=False)
        assert after.returncode != 0, "the server is gone with the context"
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)


def test_a_doc_without_the_table_is_an_error() -> None:
    with pytest.raises(ValueError, match="no skip table"):
        conformance.skips_from_doc("# nothing here\n")


# -- JUnit ----------------------------------------------------------------------------------

JUNIT_NODE_1 = """<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="Kubernetes e2e suite" tests="5" failures="1" errors="0" time="60">
  <testcase name="[BeforeSuite]" classname="Kubernetes e2e suite" time="3"></testcase>
  <testcase name="[sig-network] Services should serve a basic endpoint from pods  [Conformance]"
            classname="Kubernetes e2e suite" time="20.5"></testcase>
  <testcase name="[sig-network] Services should be rejected when no endpoints exist"
            classname="Kubernetes e2e suite" time="0"><skipped></skipped></testcase>
  <testcase name="[sig-network] Networking should check kube-proxy urls" classname="Kubernetes e2e suite"
            time="31"><failure type="Failure">timed out waiting for the condition
more text</failure></testcase>
  <testcase name="[sig-storage] Volumes should store data" classname="Kubernetes e2e suite" time="0">
    <skipped></skipped></testcase>
</testsuite>
"""
JUNIT_NODE_2 = """<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="Kubernetes e2e suite" tests="3" failures="0" errors="0" time="40">
  <testcase name="[sig-network] Services should serve a basic endpoint from pods  [Conformance]"
            classname="Kubernetes e2e suite" time="0"><skipped></skipped></testcase>
  <testcase name="[sig-network] Services should be rejected when no endpoints exist"
            classname="Kubernetes e2e suite" time="12"></testcase>
  <testcase name="[sig-network] DNS should provide DNS for services  [Conformance]"
            classname="Kubernetes e2e suite" time="0"><skipped></skipped></testcase>
</testsuite>
"""


@pytest.fixture
def junit_files(tmp_path: Path) -> list[Path]:
    files = [tmp_path / "junit_01.xml", tmp_path / "junit_02.xml"]
    files[0].write_text(JUNIT_NODE_1)
    files[1].write_text(JUNIT_NODE_2)
    return files


def test_junit_of_parallel_nodes_merges_to_one_result_per_spec(junit_files: list[Path]) -> None:
    results = {r.name: r for r in conformance.read_junit(junit_files)}
    basic = results["[sig-network] Services should serve a basic endpoint from pods  [Conformance]"]
    assert (basic.state, basic.seconds) == ("passed", 20.5)  # node 2 lists it as skipped: node 1 ran it
    assert results["[sig-network] Services should be rejected when no endpoints exist"].state == "passed"
    failed = results["[sig-network] Networking should check kube-proxy urls"]
    assert failed.state == "failed" and failed.message.startswith("timed out waiting")
    assert len(results) == 6


def test_summary_counts_what_the_focus_selects(junit_files: list[Path], tmp_path: Path) -> None:
    results = conformance.read_junit(junit_files)
    summary = conformance.summarize(results, conformance.DEFAULT_FOCUS)
    assert summary.line() == "2 passed, 1 failed, 1 skipped"
    quick = conformance.summarize(results, conformance.QUICK_FOCUS)
    assert quick.line() == "1 passed, 0 failed, 1 skipped"
    conformance.write_summary(summary, tmp_path / "summary.txt", skips=conformance.SKIPS)
    text = (tmp_path / "summary.txt").read_text()
    assert text.splitlines()[0] == "2 passed, 1 failed, 1 skipped"
    assert "FAILED  [sig-network] Networking should check kube-proxy urls\n        timed out waiting" in text
    assert conformance.failure_reason('/x/framework.go:629\nDec  3: Unexpected error:\n    <*errors.errorString>: {\n'
                                      '        s: "service is not reachable",\n    }') == "service is not reachable"
    assert "skipped [sig-network] DNS should provide DNS for services  [Conformance]\n        cluster DNS" in text


def test_progress_lines_count_what_finished_when_the_suite_was_stopped() -> None:
    log = "\n".join([
        '{"msg":"Test Suite starting","total":3,"completed":0,"skipped":0,"failed":0}',
        '{"msg":"PASSED [sig-network] Services should serve a basic endpoint from pods  [Conformance]","total":3,'
        '"completed":1,"skipped":0,"failed":0}',
        "Dec  3 19:01:04.169: INFO: something else",
        '{"msg":"FAILED [sig-network] Services should say \\"hi\\"","total":3,"completed":1,"skipped":0,"failed":1,'
        '"failures":["[sig-network] Services should say \\"hi\\""]}',
    ])
    results = conformance.read_progress(log)
    assert [(r.name, r.state) for r in results] == [
        ("[sig-network] Services should say \"hi\"", "failed"),
        ("[sig-network] Services should serve a basic endpoint from pods  [Conformance]", "passed")]


def test_a_failed_suite_setup_counts_as_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "junit_01.xml"
    path.write_text('<testsuite><testcase name="[BeforeSuite]" time="1"><failure>no nodes</failure></testcase>'
                    "</testsuite>")
    assert conformance.summarize(conformance.read_junit([path]), conformance.DEFAULT_FOCUS).line() == (
        "0 passed, 1 failed, 0 skipped")


def test_parallel_runs_put_serial_specs_in_a_pass_of_their_own() -> None:
    if not conformance.have_suite():
        pytest.skip("the e2e suite is not built (make e2e-tools)")
    argv = conformance.suite_argv(focus="F", skip="S", parallel=3, flags=["--kubeconfig=k"])
    assert Path(argv[0]).name == "ginkgo" and "-nodes=3" in argv and argv[-2:] == ["--", "--kubeconfig=k"]
    single = conformance.suite_argv(focus="F", skip="S", parallel=1, flags=["--kubeconfig=k"])
    assert Path(single[0]).name == "e2e.test" and "--ginkgo.focus=F" in single


# -- images ---------------------------------------------------------------------------------

LDD = """\tlinux-vdso.so.1 (0x00007ffd6b3f0000)
\tlibcurl.so.4 => /lib/x86_64-linux-gnu/libcurl.so.4 (0x00007f3c5e9e0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3c5e7ff000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f3c5eab9000)
"""


def test_ldd_output_and_merged_usr_paths() -> None:
    assert e2e_images.parse_ldd(LDD) == ["/lib/x86_64-linux-gnu/libcurl.so.4", "/lib/x86_64-linux-gnu/libc.so.6",
                                         "/lib64/ld-linux-x86-64.so.2"]
    assert e2e_images.image_path("/lib64/ld-linux-x86-64.so.2") == "usr/lib64/ld-linux-x86-64.so.2"
    assert e2e_images.image_path("/usr/lib/x86_64-linux-gnu/libz.so.1") == "usr/lib/x86_64-linux-gnu/libz.so.1"


@pytest.fixture(scope="module")
def agnhost_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agnhost image's layer, unpacked (needs the e2e suite's build)."""
    if not conformance.have_suite():
        pytest.skip("the e2e suite is not built (make e2e-tools)")
    specs = {spec.name: spec for spec in e2e_images.image_specs()}
    assert set(specs) == set(e2e_images.E2E_IMAGES)
    root = tmp_path_factory.mktemp("agnhost-root")
    layer = images._layer_tar(specs[e2e_images.AGNHOST].entries)
    tar = root.parent / "layer.tar"
    tar.write_bytes(layer)
    with tarfile.open(tar) as handle:
        handle.extractall(root, filter="tar")
    return root


@pytest.mark.parametrize("command", [
    ["/agnhost", "--help"],
    ["nc", "-h"],
    ["curl", "--version"],
    ["bash", "-c", "echo from-bash"],
    ["ip", "-V"],
    ["ss", "-V"],
    ["conntrack", "--version"],
    ["/bin/sh", "-c", "wget --version | head -1"],  # GNU wget: busybox 1.35's `wget -T` crashes
    ["sh", "-c", "seq 1 2 | wc -l"],
    ["/bin/sh", "-c", "nc -h"],  # bash: busybox's sh would run its own nc (no -u) whatever PATH says
])
def test_every_program_of_the_agnhost_image_runs_from_the_image_alone(agnhost_root: Path,
                                                                     command: list[str]) -> None:
    """chroot into the unpacked layer: a library the image lacks fails here, not in a spec."""
    result = subprocess.run([shutil.which("chroot") or "/usr/sbin/chroot", str(agnhost_root), "/usr/bin/env",
                             "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *command],
                            capture_output=True, text=True, timeout=30, check=False)
    output = result.stdout + result.stderr
    assert "error while loading shared libraries" not in output and "not found" not in output.lower(), output
    # OpenBSD nc -h prints its usage, with UDP (busybox's nc has none), and may exit 1
    if any("nc" in part.split() for part in command):
        assert "-u" in output and "UDP" in output, output
    else:
        assert result.returncode == 0, output


def test_image_manifest_names_are_the_suites() -> None:
    assert e2e_images.AGNHOST == "k8s.gcr.io/e2e-test-images/agnhost:2.21"
    assert e2e_images.BUSYBOX == "docker.io/library/busybox:1.29"
    assert e2e_images.PAUSE == "k8s.gcr.io/pause:3.2"
    assert e2e_images.NGINX == "docker.io/library/nginx:1.14-alpine"


# -- cluster DNS ----------------------------------------------------------------------------


def _service(namespace: str, name: str, cluster_ip: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": {"clusterIP": cluster_ip, **spec}}


def test_records_for_cluster_ip_headless_and_external_name_services() -> None:
    services = [
        _service("a", "web", "10.96.0.20", clusterIPs=["10.96.0.20"]),
        _service("a", "db", "None"),
        _service("b", "ext", "", type="ExternalName", externalName="example.org"),
        _service("b", "inside", "", type="ExternalName", externalName="web.a.svc.cluster.local."),
    ]
    slices = [
        {"metadata": {"namespace": "a", "labels": {"kubernetes.io/service-name": "db"}},
         "endpoints": [{"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": True}},
                       {"addresses": ["10.244.2.6"], "conditions": {"ready": False}},
                       {"addresses": ["10.244.2.7"]}]},
        {"metadata": {"namespace": "a", "labels": {"kubernetes.io/service-name": "web"}},
         "endpoints": [{"addresses": ["10.244.1.9"]}]},
    ]
    assert cluster_dns.dns_records(services, slices) == {
        "db-0.db.a.svc.cluster.local": ["10.244.1.5"],
        "db.a.svc.cluster.local": ["10.244.1.5", "10.244.2.7"],
        "inside.b.svc.cluster.local": ["10.96.0.20"],
        "web.a.svc.cluster.local": ["10.96.0.20"],
    }
    assert cluster_dns.hosts_text({"x.cluster.local": ["1.2.3.4", "1.2.3.5"]}) == (
        "1.2.3.4 x.cluster.local\n1.2.3.5 x.cluster.local\n")


@pytest.fixture
def cluster_dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path / "dns", address="127.0.0.1", port=free_port(), domain=cluster_dns.CLUSTER_DOMAIN)
    server.start({})
    try:
        yield server
    finally:
        server.stop()


def test_the_syncer_follows_services_of_the_real_api_server(kubeconfig: str, namespace: str,
                                                            cluster_dnsmasq: Dnsmasq, kube_cp: Any) -> None:
    assert cluster_dnsmasq.daemon is not None and cluster_dnsmasq.daemon.pid is not None
    syncer = cluster_dns.Syncer(kubeconfig=kubeconfig, hosts_file=cluster_dnsmasq.hosts_file,
                                dnsmasq_pid=cluster_dnsmasq.daemon.pid, domain=cluster_dns.CLUSTER_DOMAIN)
    thread = threading.Thread(target=syncer.run, daemon=True)
    thread.start()
    client = DnsClient(servers=[(cluster_dnsmasq.address, cluster_dnsmasq.port)], timeout=2.0,
                       queries_per_second=100)
    name = f"web.{namespace}.svc.cluster.local"
    try:
        kube_cp.kubectl("-n", namespace, "create", "service", "clusterip", "web", "--tcp=80:8080")
        cluster_ip = kube_cp.kubectl("-n", namespace, "get", "service", "web", "-o",
                                     "jsonpath={.spec.clusterIP}").strip()
        _poll(lambda: client.resolve(name, versions=[4]).addresses == (ipaddress.ip_address(cluster_ip),),
              f"{name} -> {cluster_ip}")
        # AAAA of a known name: an empty answer, not an error (busybox nslookup gives up on errors).
        aaaa = client.resolve(name, versions=[6])
        assert (aaaa.failure, aaaa.addresses) == (None, ())
        assert client.resolve(f"nope.{namespace}.svc.cluster.local", versions=[4]).failure == NXDOMAIN
        kube_cp.kubectl("-n", namespace, "delete", "service", "web")
        _poll(lambda: client.resolve(name, versions=[4]).failure == NXDOMAIN, f"{name} gone")
        writes = cluster_dnsmasq.hosts_file.stat().st_mtime_ns
        assert not syncer.write_once()  # nothing changed: no rewrite, no SIGHUP
        assert cluster_dnsmasq.hosts_file.stat().st_mtime_ns == writes
    finally:
        syncer.stopping.set()
        thread.join(10)
    assert not thread.is_alive()


def _poll(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.2)


def test_kube_dns_manifests_point_at_the_outside_server() -> None:
    service, endpoint_slice = cluster_dns.service_manifests(endpoint_ip="172.30.0.254")
    assert service["spec"]["clusterIP"] == "10.96.0.10" and "selector" not in service["spec"]
    assert {(p["protocol"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("UDP", 53, cluster_dns.DNS_PORT), ("TCP", 53, cluster_dns.DNS_PORT)}
    assert endpoint_slice["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns"
    assert endpoint_slice["endpoints"][0]["addresses"] == ["172.30.0.254"]
    # Not the endpointslice controller's: it would delete a slice of a selector-less Service it does not manage.
    assert endpoint_slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] != (
        "endpointslice-controller.k8s.io")
