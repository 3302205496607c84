"""Cluster DNS for the sandbox (``ovnk sandbox up --cluster-dns``): service names for pods.

Cluster DNS is not ovnk's job, and CoreDNS is not in Debian; but most of
Kubernetes' own network specs reach a service by its name, so the sandbox can
answer those names itself, the way a cluster does, through ovnk's own
networking:

- a dnsmasq in the sandbox's external namespace (the outside world), on the
  external host's address, port :data:`DNS_PORT`, authoritative for
  :data:`CLUSTER_DOMAIN` (an unknown name there is NXDOMAIN; a known name's
  AAAA question gets an empty answer, which busybox's ``nslookup`` needs);
- the Service ``kube-system/kube-dns`` at :data:`CLUSTER_DNS_IP` (53/UDP and
  53/TCP) with a hand-made EndpointSlice pointing at that dnsmasq, so pods reach
  it through ovnk's load balancers like any service with outside endpoints;
- the kubelets' ``clusterDNS``/``clusterDomain``, so ``ClusterFirst`` pods get
  ``nameserver 10.96.0.10`` and the usual search path;
- a syncer (``python -m ovnk_lab.cluster_dns``, one process recorded in the
  sandbox state) that watches Services and EndpointSlices and rewrites
  dnsmasq's hosts file (SIGHUP re-reads it) with :func:`dns_records`.

Names served: ``<svc>.<ns>.svc.<domain>`` -> the cluster IPs of a Service;
for a headless Service the ready endpoint addresses, and
``<hostname>.<svc>.<ns>.svc.<domain>`` for endpoints with a hostname; an
ExternalName Service whose name is one of these gets its addresses (no CNAME
record); one naming anything else gets nothing, and neither do SRV or PTR
questions: the DNS specs themselves are skipped (docs/conformance.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from ovnk_lab.outside import Dnsmasq
from ovnk_lab.procs import Daemon
from ovnk_lab.procs import wait_for

if TYPE_CHECKING:
    from ovnk_lab.sandbox import Sandbox

logger = logging.getLogger(__name__)

CLUSTER_DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
#: dnsmasq's port on the external host (53 there is the egress tests' own DNS server's).
DNS_PORT = 5353
SERVICE_NAME = "kube-dns"
SERVICE_NAMESPACE = "kube-system"
SLICE_MANAGER = "ovnk-lab.cluster-dns"


def dns_records(services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]], *,
                domain: str = CLUSTER_DOMAIN) -> dict[str, list[str]]:
    """Name -> addresses for dnsmasq's hosts file (see the module docstring)."""
    records: dict[str, list[str]] = {}

    def add(name: str, address: str) -> None:
        addresses = records.setdefault(name, [])
        if address not in addresses:
            addresses.append(address)

    headless: set[tuple[str, str]] = set()
    aliases: dict[str, str] = {}
    for service in services:
        meta, spec = service.get("metadata") or {}, service.get("spec") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if not namespace or not name:
            continue
        if spec.get("type") == "ExternalName":
            if spec.get("externalName"):
                aliases[f"{name}.{namespace}.svc.{domain}"] = str(spec["externalName"]).rstrip(".").lower()
            continue
        ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip]
        if not ips or ips == ["None"]:
            headless.add((namespace, name))
            continue
        for ip in ips:
            add(f"{name}.{namespace}.svc.{domain}", ip)
    for endpoint_slice in slices:
        meta = endpoint_slice.get("metadata") or {}
        namespace = meta.get("namespace")
        service_name = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        if (namespace, service_name) not in headless:
            continue
        for endpoint in endpoint_slice.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or ():
                add(f"{service_name}.{namespace}.svc.{domain}", address)
                if endpoint.get("hostname"):
                    add(f"{endpoint['hostname']}.{service_name}.{namespace}.svc.{domain}", address)
    # An ExternalName naming a name served here answers that name's addresses (a flattened CNAME:
    # dnsmasq aliases only from its configuration, which a SIGHUP does not re-read).
    for alias, target in aliases.items():
        for address in records.get(target, ()):
            add(alias, address)
    return {name: sorted(addresses) for name, addresses in sorted(records.items())}


def service_manifests(*, endpoint_ip: str, port: int = DNS_PORT) -> list[dict[str, Any]]:
    """``kube-system/kube-dns`` (no selector) and its EndpointSlice pointing at ``endpoint_ip:port``."""
    ports = [{"name": "dns", "protocol": "UDP", "port": 53, "targetPort": port},
             {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": port}]
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE,
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "KubeDNS"}},
        "spec": {"clusterIP": CLUSTER_DNS_IP, "ports": ports},
    }
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
        "metadata": {"name": f"{SERVICE_NAME}-outside", "namespace": SERVICE_NAMESPACE,
                     "labels": {"kubernetes.io/service-name": SERVICE_NAME,
                                "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [endpoint_ip], "conditions": {"ready": True}}],
        "ports": [{"name": "dns", "protocol": "UDP", "port": port},
                  {"name": "dns-tcp", "protocol": "TCP", "port": port}],
    }
    return [service, endpoint_slice]


class ClusterDns:
    """dnsmasq + the kube-dns Service + the syncer, for one running sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.workdir = sandbox.workdir / "cluster-dns"
        self.dnsmasq = Dnsmasq(self.workdir, address=sandbox.cluster.underlay.ext_ip, port=DNS_PORT,
                               netns=sandbox.cluster.underlay.ext_netns, domain=CLUSTER_DOMAIN)

    def start(self, *, timeout: float = 60) -> None:
        cluster = self.sandbox.cluster
        cluster.add_dir(self.workdir)
        self.dnsmasq.start({})
        assert self.dnsmasq.daemon is not None and self.dnsmasq.daemon.pid is not None
        self.dnsmasq.daemon.name = "cluster-dns/dnsmasq"
        cluster.record(self.dnsmasq.daemon)
        docs = service_manifests(endpoint_ip=self.dnsmasq.address)
        cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
        syncer = Daemon("cluster-dns/syncer", [
            sys.executable, "-m", "ovnk_lab.cluster_dns", f"--kubeconfig={cluster.kubeconfig}",
            f"--hosts-file={self.dnsmasq.hosts_file}", f"--dnsmasq-pid={self.dnsmasq.daemon.pid}",
            f"--domain={CLUSTER_DOMAIN}",
        ], log_path=self.workdir / "syncer.log").start()
        cluster.record(syncer)
        # The kube-dns Service's own name is the first record: the syncer has listed and written.
        wait_for("the cluster DNS syncer's first hosts file",
                 lambda: f"{SERVICE_NAME}.{SERVICE_NAMESPACE}.svc." in _read(self.dnsmasq.hosts_file),
                 timeout=timeout, interval=0.1, daemons=[syncer])


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def hosts_text(records: Mapping[str, Sequence[str]]) -> str:
    """dnsmasq's hosts-file form of ``records`` (one ``address name`` line each)."""
    return "".join(f"{address} {name}\n" for name, addresses in records.items() for address in addresses)


class Syncer:
    """Keeps ``hosts_file`` equal to :func:`dns_records` of the cluster; SIGHUPs dnsmasq on each change."""

    def __init__(self, *, kubeconfig: str, hosts_file: Path, dnsmasq_pid: int, domain: str) -> None:
        from ovnk.core.kube.client import KubeClient
        from ovnk.core.kube.informer import CallbackHandler
        from ovnk.core.kube.informer import InformerFactory
        from ovnk.core.kube.resources import ENDPOINTSLICES
        from ovnk.core.kube.resources import SERVICES

        self.hosts_file = hosts_file
        self.dnsmasq_pid = dnsmasq_pid
        self.domain = domain
        self.client = KubeClient(kubeconfig=kubeconfig, user_agent="ovnk-lab-cluster-dns")
        self.factory = InformerFactory(self.client)
        self.services = self.factory.informer(SERVICES)
        self.slices = self.factory.informer(ENDPOINTSLICES)
        self.changed = threading.Event()
        self.stopping = threading.Event()
        handler = CallbackHandler(on_add=lambda _o: self.changed.set(),
                                  on_update=lambda _o, _n: self.changed.set(),
                                  on_delete=lambda _o: self.changed.set())
        self.services.add_handler(handler)
        self.slices.add_handler(handler)

    def write_once(self) -> bool:
        """Rewrite the hosts file from the informers' stores; True (and SIGHUP) when it changed."""
        text = hosts_text(dns_records(self.services.store.list(), self.slices.store.list(), domain=self.domain))
        if text == _read(self.hosts_file):
            return False
        tmp = self.hosts_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.hosts_file)
        os.kill(self.dnsmasq_pid, signal.SIGHUP)
        logger.info("hosts file rewritten: %d names", text.count("\n"))
        return True

    def run(self) -> None:
        self.factory.start()
        if not self.factory.wait_for_sync(60):
            raise RuntimeError("services and endpointslices did not sync within 60s")
        self.changed.set()
        while not self.stopping.is_set():
            if self.changed.wait(1.0):
                self.changed.clear()
                # Events come in bursts (a Service, then its slice): one write for the burst.
                self.stopping.wait(0.05)
                self.write_once()
        self.factory.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ovnk_lab.cluster_dns", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--hosts-file", required=True, type=Path)
    parser.add_argument("--dnsmasq-pid", required=True, type=int)
    parser.add_argument("--domain", default=CLUSTER_DOMAIN)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    syncer = Syncer(kubeconfig=args.kubeconfig, hosts_file=args.hosts_file, dnsmasq_pid=args.dnsmasq_pid,
                    domain=args.domain)
    signal.signal(signal.SIGTERM, lambda _s, _f: syncer.stopping.set())
    syncer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
