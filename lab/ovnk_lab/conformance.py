"""``ovnk sandbox conformance``: Kubernetes' own network e2e specs against the running sandbox.

``e2e.test`` (and ``ginkgo`` for parallel runs) come from ``hack/build-kube-e2e.sh``,
built from the same 1.20 source as the control plane; the images they ask for
are built locally (:mod:`ovnk_lab.e2e_images`) and imported into every node
first. The suite runs inside the sandbox's external namespace: it reaches the
API server and the nodes over the underlay, like a client outside the cluster,
and whatever it sends stays inside the sandbox's namespaces.

What runs: ``--focus`` (default ``[sig-network]``; ``--quick`` the
``[Conformance]`` subset of it) minus :data:`SKIPS` (each with its reason; the
same table is in ``docs/conformance.md``, and a test keeps them equal) minus
``--skip``. With ``--parallel N`` > 1 the ``[Serial]`` specs run afterwards, one
at a time. JUnit files land in the report directory (``junit_*.xml``), with
the suite's output (``e2e.log``) and :func:`write_summary`'s ``summary.txt``.
The counts cover the specs the focus selects: a spec that was selected but not
run (by the skip list, or by the spec itself, e.g. "needs a cloud provider")
counts as skipped.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import BinaryIO

from ovnk.core.errors import StartupError
from ovnk_lab import paths
from ovnk_lab.hostnet import netns_path
from ovnk_lab.procs import Daemon
from ovnk_lab.procs import wait_for

if TYPE_CHECKING:
    from ovnk_lab.sandbox import Sandbox

DEFAULT_FOCUS = r"\[sig-network\]"
QUICK_FOCUS = r"\[sig-network\].*\[Conformance\]"
SERIAL = r"\[Serial\]"
DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"


@dataclass(frozen=True)
class Skip:
    """Specs whose full name matches ``pattern`` (a Go/RE2 regular expression) are not run, for ``reason``."""

    pattern: str
    reason: str


#: What the sandbox does not run, and why (docs/conformance.md holds the same table).
SKIPS: tuple[Skip, ...] = (
    Skip(r"\[sig-network\] DNS",
         "cluster DNS is not ovnk's job and CoreDNS is not in Debian; the sandbox's `--cluster-dns` answers "
         "service names only (no pod records, SRV, PTR, ExternalName CNAMEs, stub domains)"),
    Skip(r"[Ll]oad ?[Bb]alanc|LB health check|ESIPP|Firewall rule|\[Feature:(?:Ingress|NEG|kubemci|IngressScale)\]",
         "needs a cloud provider's load balancers and firewall or an ingress controller (the sandbox has none)"),
    Skip(r"IPv6|DualStack", "the sandbox is single-stack IPv4"),
    Skip(r"SCTP", "the kernel of the project's machines has no SCTP (socket(AF_INET, SOCK_STREAM, 132) fails "
         "with EPROTONOSUPPORT)"),
    Skip(r"\[Disruptive\]",
         "restarts kube-proxy or the API server over SSH, or deletes kube-proxy's iptables rules: the sandbox "
         "has no SSH and no kube-proxy (ovnk's own e2e suite restarts its components)"),
    Skip(r"check kube-proxy urls|KubeProxy should set TCP CLOSE_WAIT timeout",
         "kube-proxy's own ports and kernel conntrack settings: ovnk replaces kube-proxy, and OVS' userspace "
         "datapath keeps its own conntrack"),
    Skip(r"should provide Internet connection",
         "a pod reaches 8.8.8.8 (and google.com): nothing may leave the machine. (The BeforeEach of "
         "test/e2e/network/networking.go, which fetches http://google.com from the test runner before each of "
         "its specs, gets the lab's stand-in instead: see 'The Internet the runner checks' above)"),
    Skip(r"Proxy version v1 should proxy through a service and a pod",
         "its https: paths (the API server speaking TLS to a pod) answer 500 through kube-apiserver 1.20's "
         "egress selector, which the sandbox needs to reach pods at all (see 'The API server's way into the "
         "cluster'); its http: paths pass, and ovnk's e2e checks pods/proxy and services/proxy itself"),
    Skip(r"Services should be able to handle large requests: udp|"
         r"Services should function for service endpoints using hostNetwork",
         "fragmented UDP to a service: OVS' userspace datapath hands OVN the fragments, not the packet its "
         "conntrack reassembled, and OVN's load balancer flows match only whole packets (shown without ovnk by "
         "tests/functional/datapath/test_userspace_fragments.py; see 'Large UDP through a service' below). The "
         "hostNetwork spec fails only at its last step, large UDP; its other steps passed on 2026-12-04, and "
         "ovnk's e2e checks host-network backends itself"),
    Skip(r"\[Feature:(?:Example|Networking-Performance|NoSNAT|PerformanceDNS)\]",
         "opt-in specs outside a network plugin's conformance: example applications (redis, DNS), an iperf "
         "benchmark, NoSNAT's own test images, DNS performance"),
)


def skip_regex(skips: Iterable[Skip], extra: str = "") -> str:
    """One ginkgo ``--skip`` expression for ``skips`` plus ``extra`` (a user's ``--skip``)."""
    parts = [f"(?:{s.pattern})" for s in skips]
    if extra:
        parts.append(f"(?:{extra})")
    return "|".join(parts)


_DOC_ROW = re.compile(r"^\|\s*`(?P<pattern>[^`]+)`\s*\|\s*(?P<reason>.+?)\s*\|\s*$")


def skips_from_doc(text: str) -> list[Skip]:
    """The skip table of ``docs/conformance.md`` (rows ``| `pattern` | reason |`` between the markers)."""
    begin, end = "<!-- skips:begin -->", "<!-- skips:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"no skip table between {begin} and {end}")
    table = text.split(begin, 1)[1].split(end, 1)[0]
    skips = []
    for line in table.splitlines():
        match = _DOC_ROW.match(line.strip())
        if match:
            skips.append(Skip(match["pattern"].replace(r"\|", "|"), match["reason"].replace(r"\|", "|")))
    return skips


def skip_reason(name: str, skips: Iterable[Skip]) -> str | None:
    """The reason of the first skip matching spec ``name`` (None: not on the list)."""
    for skip in skips:
        if re.search(skip.pattern, name):
            return skip.reason
    return None


# -- results ------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecResult:
    name: str
    state: str  # passed | failed | skipped
    seconds: float = 0.0
    message: str = ""


_RANK = {"skipped": 0, "passed": 1, "failed": 2}


def read_junit(files: Iterable[Path]) -> list[SpecResult]:
    """Every spec of ginkgo's JUnit files, one result per name.

    Each parallel node writes its own file and lists the specs it did not run as skipped; a
    spec's result is its most telling state over all files (failed > passed > skipped).
    """
    results: dict[str, SpecResult] = {}
    for path in files:
        root = ET.parse(path).getroot()
        for case in root.iter("testcase"):
            name = case.get("name", "")
            failure = case.find("failure")
            if failure is None:
                failure = case.find("error")
            if failure is not None:
                state, message = "failed", (failure.get("message") or failure.text or "").strip()
            elif case.find("skipped") is not None:
                state, message = "skipped", ""
            else:
                state, message = "passed", ""
            result = SpecResult(name, state, float(case.get("time") or 0), message)
            known = results.get(name)
            if known is None or _RANK[state] > _RANK[known.state]:
                results[name] = result
    return sorted(results.values(), key=lambda r: r.name)


_PROGRESS = re.compile(r'^\{"msg":"(?P<state>PASSED|FAILED) (?P<name>.*?)","total":')


def read_progress(log: str) -> list[SpecResult]:
    """The specs that finished, from the suite's progress lines (``{"msg":"PASSED <name>",...}``).

    ginkgo writes its JUnit files only when the suite ends; a suite stopped at the timeout leaves
    these lines only (specs that did not finish, and skips, are not in them).
    """
    results: dict[str, SpecResult] = {}
    for line in log.splitlines():
        match = _PROGRESS.match(line)
        if match:
            name = match["name"].replace('\\"', '"')
            state = "passed" if match["state"] == "PASSED" else "failed"
            known = results.get(name)
            if known is None or _RANK[state] > _RANK[known.state]:
                results[name] = SpecResult(name, state)
    return sorted(results.values(), key=lambda r: r.name)


@dataclass
class Summary:
    passed: list[SpecResult] = field(default_factory=list)
    failed: list[SpecResult] = field(default_factory=list)
    skipped: list[SpecResult] = field(default_factory=list)
    #: The suite was stopped at the timeout: only the specs that finished are counted.
    incomplete: bool = False

    def line(self) -> str:
        return f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"


def summarize(results: Iterable[SpecResult], focus: str) -> Summary:
    """Count the specs ``focus`` selects (ginkgo matches it against the same full names)."""
    summary = Summary()
    pattern = re.compile(focus)
    for result in results:
        # ginkgo's own setup nodes ([BeforeSuite], [AfterSuite]) only count when they fail.
        if result.name.startswith("[") and result.name.endswith("Suite]") and " " not in result.name:
            if result.state == "failed":
                summary.failed.append(result)
            continue
        if not pattern.search(result.name):
            continue
        getattr(summary, result.state).append(result)
    return summary


_ERROR_STRING = re.compile(r'^\s*s: "(?P<text>.*)",?\s*$')
_LOCATION = re.compile(r"^\S+\.go:\d+$")


def failure_reason(message: str) -> str:
    """The telling line of a ginkgo failure: the error's text, else the first line that is not a source location."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        match = _ERROR_STRING.match(line)
        if match:
            return match["text"]
    return next((line for line in lines if not _LOCATION.match(line)), "")


def write_summary(summary: Summary, path: Path, *, skips: Sequence[Skip]) -> None:
    """``summary.txt``: every counted spec with its state; skipped ones with the list's reason."""
    lines = [summary.line(), ""]
    if summary.incomplete:
        lines[1:1] = ["INCOMPLETE: the suite was stopped at its timeout; only the specs that finished are counted"]
    for result in summary.failed:
        lines.append(f"FAILED  {result.name}\n        {failure_reason(result.message)}")
    for result in summary.passed:
        lines.append(f"passed  {result.name} ({result.seconds:.0f}s)")
    for result in summary.skipped:
        reason = skip_reason(result.name, skips) or "skipped by the spec itself (its precondition does not hold)"
        lines.append(f"skipped {result.name}\n        {reason}")
    path.write_text("\n".join(lines) + "\n")


# -- running --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    focus: str = DEFAULT_FOCUS
    skip: str = ""
    parallel: int = 1
    report_dir: Path = Path("/var/lib/ovnk/conformance")
    quiet: bool = False
    timeout: float = 4 * 3600
    flake_attempts: int = 1


def e2e_flags(*, kubeconfig: Path, nodes: int, report_dir: Path, report_prefix: str = "") -> list[str]:
    """``e2e.test``'s own flags for the sandbox (after ``--`` when ginkgo runs it)."""
    return [
        f"--kubeconfig={kubeconfig}", "--provider=local", f"--num-nodes={nodes}",
        f"--report-dir={report_dir}", f"--report-prefix={report_prefix}", f"--e2e-output-dir={report_dir}",
        f"--kubectl-path={paths.tool_bin('kubectl')}", f"--repo-root={report_dir}",
        "--node-os-distro=debian", "--container-runtime=remote", "--disable-log-dump=true",
        "--minStartupPods=0", "--system-pods-startup-timeout=2m", "--node-schedulable-timeout=2m",
        "--allowed-not-ready-nodes=0",
    ]


def suite_argv(*, focus: str, skip: str, parallel: int, flags: Sequence[str], flake_attempts: int = 1) -> list[str]:
    """``e2e.test`` alone (one process) or under ``ginkgo -nodes=N``."""
    e2e = paths.e2e_bin("e2e.test")
    if parallel > 1:
        return [paths.e2e_bin("ginkgo"), f"-nodes={parallel}", "-noColor", f"-focus={focus}", f"-skip={skip}",
                f"-flakeAttempts={flake_attempts}", e2e, "--", *flags]
    return [e2e, f"--ginkgo.focus={focus}", f"--ginkgo.skip={skip}", "--ginkgo.noColor",
            f"--ginkgo.flakeAttempts={flake_attempts}", *flags]


#: Names the suite's runner resolves to the stand-in (networking.go's BeforeEach fetches http://google.com).
INTERNET_NAMES = ("google.com", "www.google.com")


@contextlib.contextmanager
def internet_stand_in(sandbox: Sandbox, workdir: Path) -> Iterator[list[str]]:
    """A web server for the runner's "can we reach the Internet" precondition; yields the argv prefix.

    test/e2e/network/networking.go fetches ``http://google.com`` from the runner before each of its
    specs and fails the spec when that does not answer 200: a check of the runner's own uplink, not
    of the cluster. The lab is offline and nothing may leave it, so the external namespace (where the
    runner runs) gets a small HTTP server on its own loopback, and the runner, in a private mount
    namespace, an ``/etc/hosts`` that maps :data:`INTERNET_NAMES` to it. Nothing else changes: every
    other name still resolves as before, and pods are not affected (they never see this host file).
    """
    ext = netns_path(sandbox.cluster.underlay.ext_netns)
    workdir.mkdir(parents=True, exist_ok=True)
    docroot = workdir / "internet"
    docroot.mkdir(exist_ok=True)
    (docroot / "index.html").write_text("the lab's stand-in for the Internet (docs/conformance.md)\n")
    hosts = workdir / "hosts"
    original = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else "127.0.0.1 localhost\n"
    hosts.write_text(original.rstrip("\n") + "\n# ovnk conformance: the runner's Internet stand-in\n"
                     + "".join(f"127.0.0.1 {name}\n" for name in INTERNET_NAMES))
    server = Daemon("internet-stand-in", [
        paths.system_bin("nsenter"), f"--net={ext}", "--", sys.executable, "-m", "http.server", "80",
        "--bind", "127.0.0.1", "--directory", str(docroot)], log_path=workdir / "internet-stand-in.log").start()
    try:
        wait_for("the Internet stand-in answers", lambda: _answers_http(ext), timeout=30, interval=0.2,
                 daemons=[server])
        yield [paths.system_bin("unshare"), "--mount", "--propagation", "private", "--",
               "sh", "-c", 'mount --bind "$1" /etc/hosts && shift && exec "$@"', "sh", str(hosts),
               paths.system_bin("nsenter"), f"--net={ext}", "--"]
    finally:
        server.stop()


def _answers_http(netns: Path) -> bool:
    probe = subprocess.run([paths.system_bin("nsenter"), f"--net={netns}", "--", "curl", "-fsS", "-o", "/dev/null",
                            "--max-time", "2", "http://127.0.0.1/"], capture_output=True, check=False)
    return probe.returncode == 0


def import_images(sandbox: Sandbox, *, progress: Callable[[str], None]) -> None:
    from ovnk_lab import e2e_images

    bundle = e2e_images.ensure_bundle()
    for node in sandbox.cluster.nodes:
        node.import_images(bundle)
    progress(f"imported {len(e2e_images.E2E_IMAGES)} e2e images into {len(sandbox.cluster.nodes)} node(s)")


def run(sandbox: Sandbox, options: RunOptions, *, progress: Callable[[str], None] | None = None) -> Summary:
    """Run the selected specs against ``sandbox``; returns the summary (also in ``summary.txt``)."""
    say = progress or (lambda _m: None)
    if not sandbox.cluster.status().running:
        raise StartupError(f"no sandbox {sandbox.prefix!r} is running")
    report_dir = options.report_dir
    if report_dir.exists():
        for old in [*report_dir.glob("junit_*.xml"), report_dir / "e2e.log", report_dir / "summary.txt"]:
            old.unlink(missing_ok=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    import_images(sandbox, progress=say)
    skips = list(SKIPS)
    nodes = len(sandbox.cluster.nodes)
    passes = [("", options.focus, skip_regex(skips, options.skip), options.parallel)]
    if options.parallel > 1:
        # Parallel nodes would run [Serial] specs beside others: they get a pass of their own.
        passes = [("", options.focus, skip_regex([*skips, Skip(SERIAL, "")], options.skip), options.parallel),
                  ("serial_", f"(?:{options.focus}).*{SERIAL}|{SERIAL}.*(?:{options.focus})",
                   skip_regex(skips, options.skip), 1)]
    started = time.monotonic()
    timed_out = False
    with open(report_dir / "e2e.log", "ab") as log, internet_stand_in(sandbox, report_dir / "lab") as runner_prefix:
        for prefix, focus, skip, parallel in passes:
            if timed_out:
                break
            flags = e2e_flags(kubeconfig=sandbox.kubeconfig, nodes=nodes, report_dir=report_dir, report_prefix=prefix)
            argv = [*runner_prefix, *suite_argv(focus=focus, skip=skip, parallel=parallel, flags=flags,
                                        flake_attempts=options.flake_attempts)]
            say(f"running {'the [Serial] specs' if prefix else 'the suite'} ({parallel} at a time); "
                f"output in {report_dir / 'e2e.log'}")
            remaining = options.timeout - (time.monotonic() - started)
            try:
                _run_streaming(argv, log=log, echo=not options.quiet, cwd=report_dir, timeout=remaining)
            except subprocess.TimeoutExpired:
                say(f"the suite did not finish within {options.timeout:g}s: stopped; counting the specs that finished")
                timed_out = True
    if timed_out:
        results = read_progress((report_dir / "e2e.log").read_text(errors="replace"))
        junit = sorted(report_dir.glob("junit_*.xml"))  # a pass that finished before the timeout
        results = _merge([*read_junit(junit), *results])
    else:
        results = read_junit(sorted(report_dir.glob("junit_*.xml")))
    summary = summarize(results, options.focus)
    summary.incomplete = timed_out
    write_summary(summary, report_dir / "summary.txt", skips=skips)
    return summary


def _merge(results: Iterable[SpecResult]) -> list[SpecResult]:
    merged: dict[str, SpecResult] = {}
    for result in results:
        known = merged.get(result.name)
        if known is None or _RANK[result.state] > _RANK[known.state]:
            merged[result.name] = result
    return sorted(merged.values(), key=lambda r: r.name)


def _run_streaming(argv: Sequence[str], *, log: BinaryIO, echo: bool, cwd: Path, timeout: float) -> int:
    """Run ``argv`` in its own process group, copying its output to ``log`` (and stdout); stop it at ``timeout``."""
    env = {**paths.default_env(), "HOME": str(cwd)}
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                            start_new_session=True)

    def copy() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            log.write(line)
            log.flush()
            if echo:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()

    reader = threading.Thread(target=copy, name="e2e-output", daemon=True)
    reader.start()
    try:
        code = proc.wait(max(timeout, 1))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        # The suite's own process group: ginkgo, its e2e.test nodes and their kubectl children.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    finally:
        reader.join(30)
    return code


def default_report_dir(prefix: str) -> Path:
    return Path(os.environ.get("OVNK_SANDBOX_DIR", "/var/lib/ovnk/sandbox")).parent / "conformance" / prefix


def have_suite() -> bool:
    """True when ``hack/build-kube-e2e.sh`` has built the suite."""
    try:
        paths.e2e_bin("e2e.test")
    except StartupError:
        return False
    return shutil.which("nsenter") is not None


__all__ = [
    "DEFAULT_FOCUS",
    "QUICK_FOCUS",
    "SKIPS",
    "RunOptions",
    "Skip",
    "SpecResult",
    "Summary",
    "failure_reason",
    "read_junit",
    "read_progress",
    "run",
    "skip_reason",
    "skip_regex",
    "skips_from_doc",
    "summarize",
    "write_summary",
]
