"""A real Kubernetes control plane: etcd, kube-apiserver (TLS, tokens, RBAC),
kube-controller-manager and kube-scheduler, all in one work directory.

Binaries come from ``hack/build-kube.sh`` (Debian's kubernetes 1.20 source).
With the binaries cached, start-up takes a few seconds (certificates use EC
keys, etcd keeps its data on tmpfs when available).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import ssl
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ovnk_lab import paths
from ovnk_lab.procs import Daemon
from ovnk_lab.procs import free_port
from ovnk_lab.procs import run
from ovnk_lab.procs import wait_for

SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


class Pki:
    """A small CA that signs serving and client certificates with openssl (EC P-256 keys)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = CertPair(self.dir / "ca.crt", self.dir / "ca.key")
        if not self.ca.cert.exists():
            run([
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", str(self.ca.key), "-out", str(self.ca.cert), "-days", "3650",
                "-subj", "/CN=ovnk-lab-ca",
                # Python >= 3.13 verifies strictly (VERIFY_X509_STRICT): a CA needs its key usage.
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ])

    def issue(self, name: str, *, cn: str, orgs: Sequence[str] = (), sans: Sequence[str] = (),
              server: bool = False, client: bool = False) -> CertPair:
        """Issue ``<name>.crt``/``<name>.key`` signed by the CA (reused if present)."""
        pair = CertPair(self.dir / f"{name}.crt", self.dir / f"{name}.key")
        if pair.cert.exists() and pair.key.exists():
            return pair
        subject = f"/CN={cn}" + "".join(f"/O={o}" for o in orgs)
        csr = self.dir / f"{name}.csr"
        ext = self.dir / f"{name}.ext"
        usages = []
        if server:
            usages.append("serverAuth")
        if client:
            usages.append("clientAuth")
        lines = [
            "basicConstraints=CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={','.join(usages) or 'clientAuth'}",
        ]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(pair.key), "-out", str(csr), "-subj", subject])
        run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.ca.cert), "-CAkey", str(self.ca.key),
             "-CAcreateserial", "-out", str(pair.cert), "-days", "3650", "-extfile", str(ext)])
        csr.unlink()
        ext.unlink()
        return pair


def write_kubeconfig(path: Path, *, server: str, ca: Path, user: str, token: str | None = None,
                     cert: CertPair | None = None) -> Path:
    """Write a kubeconfig (JSON is valid YAML) for one identity."""
    user_entry: dict[str, str] = {}
    if token:
        user_entry["token"] = token
    if cert:
        user_entry["client-certificate"] = str(cert.cert)
        user_entry["client-key"] = str(cert.key)
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": user}}],
        "current-context": "lab",
    }
    path.write_text(json.dumps(doc, indent=2))
    path.chmod(0o600)
    return path


class KubeControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler.

    :param workdir: all files (certs, kubeconfigs, logs, etcd data pointer).
    :param bind_address: address the API server listens on (127.0.0.1, or an
        underlay IP the sandbox nodes can reach). On an underlay IP the API server
        keeps the ``default/kubernetes`` Endpoints and EndpointSlice itself, as in a real
        cluster (pods reach it through the ``kubernetes`` service); on loopback it
        cannot (an endpoint may not be a loopback address) and nothing does.
    :param extra_sans: more IPs for the serving certificate.
    :param controllers: the ``--controllers`` of kube-controller-manager.
    :param scheduler: start kube-scheduler.
    :param extra_apiserver_args: appended to kube-apiserver's command line.
    :param audit_groups: user groups whose requests the API server writes to :attr:`audit_log`
        (metadata only: who, verb, resource, response code); nobody else's.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        bind_address: str = "127.0.0.1",
        extra_sans: Sequence[str] = (),
        controllers: str = "*,-nodelifecycle,-nodeipam,-cloud-node-lifecycle,-service,-route",
        scheduler: bool = True,
        extra_apiserver_args: Sequence[str] = (),
        audit_groups: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.audit_groups = tuple(audit_groups)
        self.bind_address = bind_address
        self.extra_sans = tuple(extra_sans)
        self.controllers = controllers
        self.with_scheduler = scheduler
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.pki = Pki(workdir / "pki")
        self.etcd: Daemon | None = None
        self.apiserver: Daemon | None = None
        self.controller_manager: Daemon | None = None
        self.scheduler: Daemon | None = None
        self.tokens: dict[str, str] = {}
        self.api_port = 0
        self.etcd_port = 0
        self._etcd_data: Path | None = None

    # -- addresses and identities --------------------------------------------

    @property
    def server(self) -> str:
        return f"https://{self.bind_address}:{self.api_port}"

    @property
    def ca_cert(self) -> Path:
        return self.pki.ca.cert

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (system:masters)."""
        return self.workdir / "admin.kubeconfig"

    @property
    def etcd_data_dir(self) -> Path | None:
        """Where etcd keeps its data (tmpfs when available); None before ``start()``."""
        return self._etcd_data

    @property
    def etcd_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    def identity_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig with a client certificate for ``user`` in ``groups`` (for RBAC tests, kubelets)."""
        safe = user.replace(":", "_")
        pair = self.pki.issue(f"user-{safe}", cn=user, orgs=groups, client=True)
        return write_kubeconfig(self.workdir / f"{safe}.kubeconfig", server=self.server, ca=self.ca_cert,
                                user=user, cert=pair)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> KubeControlPlane:
        self.workdir.mkdir(parents=True, exist_ok=True)
        logs = self.workdir / "log"
        logs.mkdir(exist_ok=True)
        self.api_port = self.api_port or free_port(self.bind_address)
        self.etcd_port = free_port()
        peer_port = free_port()
        self._write_identities()

        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else self.workdir
        self._etcd_data = base / f"ovnk-etcd-{os.getpid()}-{secrets.token_hex(4)}"
        self.etcd = Daemon("etcd", [
            paths.system_bin("etcd"), "--name=lab", f"--data-dir={self._etcd_data}",
            f"--listen-client-urls={self.etcd_endpoint}", f"--advertise-client-urls={self.etcd_endpoint}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=lab=http://127.0.0.1:{peer_port}",
            "--log-level=warn", "--logger=zap", "--quota-backend-bytes=4294967296",
        ], log_path=logs / "etcd.log", env={**os.environ, "ETCD_UNSUPPORTED_ARCH": ""}).start()
        self.start_apiserver()
        self._start_controllers()
        return self

    @property
    def audit_log(self) -> Path:
        """JSON lines, one per request of the ``audit_groups`` (empty file or none without them)."""
        return self.workdir / "log" / "audit.log"

    def _audit_args(self) -> list[str]:
        if not self.audit_groups:
            return []
        policy = self.workdir / "audit-policy.json"
        policy.write_text(json.dumps({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
            "rules": [{"level": "Metadata", "userGroups": list(self.audit_groups)}, {"level": "None"}],
        }, indent=1))
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=200", "--audit-log-maxbackup=1"]

    def start_apiserver(self) -> None:
        """Start (or restart) kube-apiserver on the same port and wait until /readyz answers."""
        pki = self.pki
        serving = pki.issue(
            "apiserver", cn="kube-apiserver", server=True,
            sans=["IP:127.0.0.1", f"IP:{KUBERNETES_SERVICE_IP}", f"IP:{self.bind_address}", "DNS:localhost",
                  "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                  *(f"IP:{ip}" for ip in self.extra_sans)],
        )
        kubelet_client = pki.issue("apiserver-kubelet-client", cn="kube-apiserver-kubelet-client",
                                   orgs=["system:masters"], client=True)
        sa_key = self.workdir / "pki" / "sa.key"
        sa_pub = self.workdir / "pki" / "sa.pub"
        logs = self.workdir / "log"
        self.apiserver = Daemon("kube-apiserver", [
            paths.kube_bin("kube-apiserver"),
            f"--etcd-servers={self.etcd_endpoint}",
            f"--bind-address={self.bind_address}", f"--advertise-address={self.bind_address}",
            f"--secure-port={self.api_port}", "--insecure-port=0",
            f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={sa_pub}", f"--service-account-signing-key-file={sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--kubelet-client-certificate={kubelet_client.cert}", f"--kubelet-client-key={kubelet_client.key}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--allow-privileged=true", "--enable-priority-and-fairness=false",
            f"--endpoint-reconciler-type={'none' if ipaddress.ip_address(self.bind_address).is_loopback else 'lease'}",
            "--profiling=false", "--v=1",
            *self._audit_args(),
            *self.extra_apiserver_args,
        ], log_path=logs / "kube-apiserver.log").start()
        wait_for("kube-apiserver /readyz", self._apiserver_ready, timeout=60, interval=0.1,
                 daemons=[self.apiserver])

    def stop_apiserver(self, kill: bool = False) -> None:
        if self.apiserver:
            if kill:
                self.apiserver.kill()
            else:
                self.apiserver.stop()

    def _start_controllers(self) -> None:
        logs = self.workdir / "log"
        kcm_conf = write_kubeconfig(self.workdir / "kcm.kubeconfig", server=self.server, ca=self.ca_cert,
                                    user="system:kube-controller-manager",
                                    token=self.tokens["system:kube-controller-manager"])
        self.controller_manager = Daemon("kube-controller-manager", [
            paths.kube_bin("kube-controller-manager"), f"--kubeconfig={kcm_conf}",
            f"--authentication-kubeconfig={kcm_conf}", f"--authorization-kubeconfig={kcm_conf}",
            f"--service-account-private-key-file={self.workdir / 'pki' / 'sa.key'}",
            f"--root-ca-file={self.pki.ca.cert}",
            f"--cluster-signing-cert-file={self.pki.ca.cert}", f"--cluster-signing-key-file={self.pki.ca.key}",
            "--use-service-account-credentials=true", "--leader-elect=false",
            f"--controllers={self.controllers}", "--port=0", "--secure-port=0", "--v=1",
        ], log_path=logs / "kube-controller-manager.log").start()
        if self.with_scheduler:
            sched_conf = write_kubeconfig(self.workdir / "scheduler.kubeconfig", server=self.server,
                                          ca=self.ca_cert, user="system:kube-scheduler",
                                          token=self.tokens["system:kube-scheduler"])
            self.scheduler = Daemon("kube-scheduler", [
                paths.kube_bin("kube-scheduler"), f"--kubeconfig={sched_conf}",
                f"--authentication-kubeconfig={sched_conf}", f"--authorization-kubeconfig={sched_conf}",
                "--leader-elect=false", "--port=0", "--secure-port=0", "--v=1",
            ], log_path=logs / "kube-scheduler.log").start()

    def stop(self) -> None:
        for daemon in (self.scheduler, self.controller_manager, self.apiserver, self.etcd):
            if daemon:
                daemon.stop()
        if self._etcd_data:
            shutil.rmtree(self._etcd_data, ignore_errors=True)

    def __enter__(self) -> KubeControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def daemons(self) -> list[Daemon]:
        return [d for d in (self.etcd, self.apiserver, self.controller_manager, self.scheduler) if d]

    # -- helpers -------------------------------------------------------------

    def compact_etcd(self) -> None:
        """Compact etcd to its current revision (makes older resourceVersions expire: 410)."""
        env = {**os.environ, "ETCDCTL_API": "3"}
        out = run([paths.system_bin("etcdctl"), f"--endpoints={self.etcd_endpoint}", "endpoint", "status",
                   "--write-out=json"], env=env).stdout
        revision = json.loads(out)[0]["Status"]["header"]["revision"]
        run([paths.system_bin("etcdctl"), f"--endpoints={self.etcd_endpoint}", "compact", str(revision)], env=env)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        res = run([paths.tool_bin("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                  input=input.encode() if input is not None else None, check=check, timeout=120)
        return res.stdout

    def _write_identities(self) -> None:
        tokens_file = self.workdir / "tokens.csv"
        if tokens_file.exists():
            for line in tokens_file.read_text().splitlines():
                token, user = line.split(",")[:2]
                self.tokens[user] = token
            # The port may have changed: always rewrite the kubeconfig.
            write_kubeconfig(self.kubeconfig, server=self.server, ca=self.ca_cert, user="admin",
                             token=self.tokens["admin"])
            return
        users = {
            "admin": "system:masters",
            "system:kube-controller-manager": "",
            "system:kube-scheduler": "",
        }
        lines = []
        for user, group in users.items():
            token = secrets.token_hex(16)
            self.tokens[user] = token
            lines.append(f'{token},{user},{user},"{group}"' if group else f"{token},{user},{user}")
        tokens_file.write_text("\n".join(lines) + "\n")
        tokens_file.chmod(0o600)
        sa_key = self.workdir / "pki" / "sa.key"
        if not sa_key.exists():
            run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(sa_key)])
            run(["openssl", "ec", "-in", str(sa_key), "-pubout", "-out", str(self.workdir / "pki" / "sa.pub")])
        write_kubeconfig(self.kubeconfig, server=self.server, ca=self.ca_cert, user="admin",
                         token=self.tokens["admin"])

    def _apiserver_ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        req = urllib.request.Request(f"{self.server}/readyz",
                                     headers={"Authorization": f"Bearer {self.tokens['admin']}"})
        with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
            return bool(resp.status == 200)
