"""Multicast on the sandbox with real packets: IGMP joins, snooping, per-namespace enablement.

Receivers are ovnk-echo pods whose main process joins the group
(``mcast-join``) and prints one line per datagram, read with ``kubectl logs``;
watchers (``mcast-watch``) do not join and print every datagram to the group
that reaches their interface (a packet socket), so a switch that floods instead
of snooping shows there. Senders ``kubectl exec`` ``ovnk-echo mcast-send``.
What OVN learnt is read with ``ovnk multicast groups --json`` (SB ``IGMP_Group``).

Negative checks ("nobody else got it") are made after a positive one: the
datagrams a pod must not see were sent in the same burst as those another pod
did see, so their absence is not a matter of waiting long enough.
The module switches the plugin on in the session sandbox; its last test
switches it off again and checks that everything it made is gone.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ovnk_lab.images import ECHO_IN_IMAGE
from ovnk_lab.sandbox import Sandbox
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import poll_until

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

GROUP = "239.10.10.10"
PORT = 5000
ANNOTATION = "k8s.ovn.org/multicast-enabled"
#: Receivers join again every few seconds: a report sent before their port was wired is repeated.
REJOIN = "3"


@pytest.fixture(scope="module")
def multicast(sandbox: Sandbox, cluster: Cluster) -> Iterator[dict[str, Any]]:
    sandbox.set_plugins(["multicast"])
    made: list[str] = []
    try:
        yield {"namespaces": made}
    finally:
        if made:
            cluster.kubectl("delete", "namespace", *made, "--wait=false", check=False)


def namespace(cluster: Cluster, made: list[str], *, enabled: bool) -> str:
    name = cluster.namespace()
    made.append(name)
    if enabled:
        cluster.kubectl("annotate", "namespace", name, f"{ANNOTATION}=true")
    return name


def run(cluster: Cluster, namespace: str, pods: dict[str, tuple[str, list[str]]]) -> None:
    """Create ovnk-echo pods ``name -> (node, args)`` and wait until they are Ready."""
    docs = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
             "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                      "containers": [{"name": "echo", "image": "ovnk-test/echo", "imagePullPolicy": "Never",
                                      "args": args}]}}
            for name, (node, args) in pods.items()]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", *(f"pod/{n}" for n in pods), "--timeout=120s",
                    timeout=150)


def joiner(node: str) -> tuple[str, list[str]]:
    return node, ["mcast-join", GROUP, str(PORT), REJOIN]


def watcher(node: str) -> tuple[str, list[str]]:
    return node, ["mcast-watch", GROUP, str(PORT)]


def server(node: str) -> tuple[str, list[str]]:
    return node, ["8080/tcp", "8081/udp"]


def received(cluster: Cluster, namespace: str, pod: str) -> list[str]:
    """The payloads the pod printed (``<source> <payload>`` lines after its first one)."""
    lines = cluster.kubectl("-n", namespace, "logs", pod).splitlines()
    return [line.split(" ", 1)[1] for line in lines if not line.startswith("ovnk-echo:") and " " in line]


def send(cluster: Cluster, namespace: str, pod: str, message: str, *, count: int = 3) -> None:
    cluster.exec(namespace, pod, ECHO_IN_IMAGE, "mcast-send", GROUP, str(PORT), message, str(count), "0.1")


def deliver(cluster: Cluster, namespace: str, pod: str, to: list[tuple[str, str]], *, timeout: float = 60) -> str:
    """Send bursts from ``pod`` until every ``(namespace, pod)`` of ``to`` got one; the message that arrived."""
    sent: list[str] = []

    def everyone_got_one() -> bool:
        sent.append(f"{pod}-{uuid.uuid4().hex[:6]}")
        send(cluster, namespace, pod, sent[-1])
        got = [set(received(cluster, ns, name)) for ns, name in to]
        return any(all(message in g for g in got) for message in sent)

    poll_until(f"datagrams from {namespace}/{pod} reach {to}", everyone_got_one, timeout=timeout, interval=0.5)
    return next(m for m in reversed(sent) if all(m in received(cluster, ns, name) for ns, name in to))


def burst_lost(cluster: Cluster, namespace: str, pod: str, to: list[tuple[str, str]], *, bursts: list[str]) -> bool:
    """Send a burst from ``pod``; true when the burst before it (sent at least one ``kubectl exec``
    earlier) reached none of ``to``. ``bursts`` keeps the messages sent so far."""
    previous = bursts[-1] if bursts else None
    bursts.append(f"{pod}-{uuid.uuid4().hex[:6]}")
    send(cluster, namespace, pod, bursts[-1])
    return previous is not None and not any(previous in received(cluster, ns, name) for ns, name in to)


def groups(cluster: Cluster, sandbox: Sandbox) -> dict[str, set[str]]:
    """``ovnk multicast groups --json``: group -> pods that joined it."""
    out = subprocess.run([*cluster.sandbox_ovnk(), "--sb-address", sandbox.sb_address(), "multicast", "groups",
                          "--json"], capture_output=True, text=True, timeout=60, check=True).stdout
    return {group: {m["pod"] for m in members if m["pod"]} for group, members in json.loads(out).items()}


def nb_multicast_state(sandbox: Sandbox) -> dict[str, Any]:
    """Every trace of the plugin in the NB: its ACLs, the switches' mcast_* keys, the router's relay."""
    assert sandbox.central is not None
    acls = json.loads(sandbox.central.nbctl("--format=json", "--columns=external_ids", "list", "ACL"))["data"]
    owners = [dict(row[0][1]).get("k8s.ovn.org/owner-type") for row in acls]
    switches = json.loads(sandbox.central.nbctl("--format=json", "--columns=name,other_config", "list",
                                                "Logical_Switch"))["data"]
    router = json.loads(sandbox.central.nbctl("--format=json", "--columns=options", "list", "Logical_Router",
                                              "ovn_cluster_router"))["data"][0][0][1]
    return {"acls": sorted(o for o in owners if o in ("MulticastCluster", "MulticastNS")),
            "switch_keys": {name: sorted(k for k, _ in config[1] if k.startswith("mcast_")) for name, config in switches},
            "relay": dict(router).get("mcast_relay")}


def test_joined_pods_of_enabled_namespaces_receive_on_both_nodes_and_no_one_else(
        cluster: Cluster, sandbox: Sandbox, multicast: dict[str, Any]) -> None:
    n1, n2 = cluster.nodes
    on = namespace(cluster, multicast["namespaces"], enabled=True)
    off = namespace(cluster, multicast["namespaces"], enabled=False)
    run(cluster, on, {"sender": server(n1), "near": joiner(n1), "far": joiner(n2),
                      "watch-near": watcher(n1), "watch-far": watcher(n2)})
    run(cluster, off, {"outsider": joiner(n1), "off-sender": server(n2)})

    # OVN learnt the joins of the enabled namespace's pods, not the others'.
    poll_until("SB IGMP_Group has near and far", lambda: {f"{on}/near", f"{on}/far"} <= groups(cluster, sandbox)
               .get(GROUP, set()), timeout=60)

    # Same node and across nodes (relayed by the cluster router).
    message = deliver(cluster, on, "sender", [(on, "near"), (on, "far")])
    # Snooping: the pods that did not join saw nothing of that burst on their interface, and the
    # pod of the namespace without multicast, which joined, got nothing either.
    for ns, pod in ((on, "watch-near"), (on, "watch-far"), (off, "outsider")):
        assert message not in received(cluster, ns, pod), f"{ns}/{pod} got {message}"
    assert f"{off}/outsider" not in groups(cluster, sandbox).get(GROUP, set()), "its report was dropped"

    # The namespace without multicast sends into the group: no one receives it. Its burst goes
    # before one of the enabled namespace, which arrives (the receivers were listening).
    foreign = f"off-{uuid.uuid4().hex[:6]}"
    send(cluster, off, "off-sender", foreign, count=5)
    deliver(cluster, on, "sender", [(on, "near"), (on, "far")])
    for ns, pod in ((on, "near"), (on, "far"), (on, "watch-near"), (on, "watch-far"), (off, "outsider")):
        assert foreign not in received(cluster, ns, pod), f"{ns}/{pod} got {foreign}"

    # The annotation removed: delivery stops; set again: it resumes.
    cluster.kubectl("annotate", "namespace", on, f"{ANNOTATION}-")
    bursts: list[str] = []
    poll_until("delivery stops",
               lambda: burst_lost(cluster, on, "sender", [(on, "near"), (on, "far")], bursts=bursts),
               timeout=60, interval=0)
    cluster.kubectl("annotate", "namespace", on, f"{ANNOTATION}=true")
    deliver(cluster, on, "sender", [(on, "near"), (on, "far")])

    # The controller restarted: traffic keeps flowing and nothing it owns changes.
    before = nb_multicast_state(sandbox)
    sandbox.restart_controller(0)
    poll_until("a leading controller", lambda: sandbox.leader_controller() is not None, timeout=60)
    deliver(cluster, on, "sender", [(on, "near"), (on, "far")])
    assert nb_multicast_state(sandbox) == before


def test_plugin_off_removes_every_row_and_option_and_stops_relaying(cluster: Cluster, sandbox: Sandbox,
                                                                    multicast: dict[str, Any]) -> None:
    n1, n2 = cluster.nodes
    on = namespace(cluster, multicast["namespaces"], enabled=True)
    run(cluster, on, {"sender": server(n1), "near": joiner(n1), "far": joiner(n2), "watch-near": watcher(n1)})
    message = deliver(cluster, on, "sender", [(on, "near"), (on, "far")])
    assert message not in received(cluster, on, "watch-near"), "snooping: a pod that did not join gets nothing"
    state = nb_multicast_state(sandbox)
    assert state["relay"] == "true" and state["acls"].count("MulticastNS") >= 2, state
    assert all("mcast_snoop" in state["switch_keys"][node] for node in (n1, n2)), state

    sandbox.set_plugins([])
    poll_until("multicast rows and options gone",
               lambda: nb_multicast_state(sandbox) == {"acls": [], "relay": None,
                                                       "switch_keys": {n: [] for n in state["switch_keys"]}},
               timeout=60)
    # What is left is OVN's plain switch: multicast floods to every port of the sender's own switch
    # (as upstream with multicast disabled), joined or not, and nothing is relayed to the other
    # node's switch. "near" receiving is the proof that the bursts "far" did not get were sent; the
    # watcher seeing the flood is the proof that it would have shown one before.
    message = deliver(cluster, on, "sender", [(on, "near"), (on, "watch-near")])
    assert message not in received(cluster, on, "far")
