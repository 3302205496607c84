"""``ovnk egressfirewall status``'s rows from listed objects (the listing itself is e2e-tested)."""

from __future__ import annotations

from typing import Any

from ovnk.plugins.egressfirewall.cli import status_rows


class ListedObjects:
    """Stands in for KubeClient.list: the CLI only lists EgressFirewalls."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects

    def list(self, resource: Any) -> tuple[list[dict[str, Any]], str]:
        return self.objects, "1"


def firewall(ns: str, rules: list[dict[str, Any]], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "default", "namespace": ns}, "spec": {"egress": rules}, "status": status}


def test_rows_carry_rules_dns_names_status_and_what_is_wrong() -> None:
    applied = {"status": "EgressFirewall Rules applied", "messages": ["global: EgressFirewall Rules applied"]}
    objects = [
        firewall("b", [{"type": "Deny", "to": {"cidrSelector": "10.0.0.300/8"}}]),
        firewall("a", [{"type": "Allow", "to": {"dnsName": "WWW.Example.com."}},
                       {"type": "Deny", "to": {"cidrSelector": "0.0.0.0/0"}}], applied),
    ]
    rows = status_rows(ListedObjects(objects))  # type: ignore[arg-type]
    assert [r["namespace"] for r in rows] == ["a", "b"]
    assert rows[0] == {"namespace": "a", "name": "default", "rules": 2, "dns_names": ["www.example.com"],
                       "status": "EgressFirewall Rules applied", "messages": applied["messages"], "problem": ""}
    assert rows[1]["status"] is None and rows[1]["dns_names"] == []
    assert "cidrSelector '10.0.0.300/8' is not a CIDR" in rows[1]["problem"]
