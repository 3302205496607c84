"""EgressIP's NB rows (pure builders)."""

from __future__ import annotations

import ipaddress

from ovnk.plugins.egressip import nb

CTL = "default-network-controller"


def test_rows_of_an_object_reroute_with_ecmp_and_snat_on_each_egress_node() -> None:
    pod = nb.ServedPod("team-a", "web-1", (ipaddress.ip_address("10.244.1.5"),))
    hops = [nb.EgressHop("n1", ipaddress.ip_address("172.30.0.100"), ipaddress.ip_address("100.64.0.2")),
            nb.EgressHop("n2", ipaddress.ip_address("172.30.0.101"), ipaddress.ip_address("100.64.0.3"))]
    rows = nb.object_rows(controller=CTL, eip="eip1", pods=[pod], hops=hops)
    (policy,) = [r for r in rows if r.table == "Logical_Router_Policy"]
    assert policy.router == "ovn_cluster_router"
    assert policy.columns == {"priority": 100, "action": "reroute", "match": "ip4.src == 10.244.1.5",
                              "nexthops": ["100.64.0.2", "100.64.0.3"]}
    ids = policy.ids.external_ids()
    assert ids["k8s.ovn.org/owner-type"] == "EgressIP" and ids["k8s.ovn.org/name"] == "eip1_team-a/web-1"
    assert ids["priority"] == "100" and ids["ip-family"] == "ip4" and ids["network"] == "default"
    nats = sorted((r.router, r.columns["external_ip"]) for r in rows if r.table == "NAT")
    assert nats == [("GR_n1", "172.30.0.100"), ("GR_n2", "172.30.0.101")]
    nat = next(r for r in rows if r.table == "NAT")
    assert nat.columns["type"] == "snat" and nat.columns["logical_ip"] == "10.244.1.5"
    assert nat.columns["logical_port"] == ["k8s-n1"]


def test_no_hop_of_the_pods_family_gives_no_rows() -> None:
    pod = nb.ServedPod("a", "p", (ipaddress.ip_address("fd00:10:244::5"),))
    hops = [nb.EgressHop("n1", ipaddress.ip_address("172.30.0.100"), ipaddress.ip_address("100.64.0.2"))]
    assert nb.object_rows(controller=CTL, eip="e", pods=[pod], hops=hops) == []


def test_pod_to_node_policy_names_this_features_set_and_node_ips() -> None:
    row = nb.pod_to_node_policy(CTL, 4)
    served, _ = nb.served_pods_set(CTL, 4)
    assert row.columns["match"].startswith(f"ip4.src == ${served} && ip4.dst == $a")
    assert row.columns["options"] == {"pkt_mark": "1008"} and row.columns["priority"] == 102
    assert nb.egressip_of("eip1_team-a/web-1") == "eip1"


def test_arp_flows_of_the_egress_ips_this_node_holds() -> None:
    from ovnk.plugins.egressip.node import arp_flows
    from ovnk.plugins.egressip.node import held_ips

    objects = [{"status": {"items": [{"egressIP": "172.30.0.100", "node": "n1"},
                                     {"egressIP": "172.30.0.101", "node": "n2"}]}},
               {"status": {"items": [{"egressIP": "fd00::5", "node": "n1"}, {"egressIP": "bad", "node": "n1"}]}},
               {"spec": {}}]
    assert held_ips(objects, "n1") == ["172.30.0.100"], "IPv4 only (ARP), malformed entries skipped"
    assert arp_flows(["172.30.0.100"], uplink=1, patch=3) == [
        "table=0,priority=85,in_port=1,arp,arp_op=1,arp_tpa=172.30.0.100 actions=output:3"]


def test_reply_mark_leaves_replies_to_cluster_and_join_addresses_unmarked() -> None:
    internal = [ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_network("100.64.0.0/16"),
                ipaddress.ip_network("fd00:10:244::/48")]
    _, columns = nb.reply_mark_qos("ctl", 4, internal=internal)
    assert columns["match"] == ("ip4.src == $" + nb.served_pods_set("ctl", 4)[0]
                                + " && ct.trk && ct.rpl && ip4.dst != {10.244.0.0/16, 100.64.0.0/16}")
    assert columns["action"] == {"mark": 42} and columns["direction"] == "from-lport"
    _, v6 = nb.reply_mark_qos("ctl", 6, internal=internal)
    assert v6["match"].endswith("ip6.dst != {fd00:10:244::/48}")
