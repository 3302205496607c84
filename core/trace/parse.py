"""Reading ``ovn-trace``'s detailed output (pure: text in, steps out).

``ovn-trace`` prints one section per pipeline a packet goes through
(``ingress(dp="node-a", inport="ns_pod")`` followed by a line of dashes), and
in it one line per logical flow the packet hits::

     8. ls_in_acl (northd.c:6809): ip && !ct.est, priority 1, uuid 22f9383e
        reg0[1] = 1;
        next;

followed by that flow's actions, indented. ``uuid`` is the first 8 hex digits
of the Southbound ``Logical_Flow`` row; its ``external_ids:stage-hint`` is the
first 8 hex digits of the Northbound row the flow was made from (an ACL, a
load balancer, a router policy, a NAT), which is how a step maps back to the
``external_ids`` ovnk wrote. Connection-tracking actions (``ct_lb_mark``,
``ct_next``) open sections of their own; the steps after them continue the
same pipeline.

Since OVN 23.06 an ACL's flow in ``ls_*_acl_eval`` (and the ``after_lb`` variant) only
sets a verdict bit (``reg8[17] = 1;`` for drop, ``reg8[18]`` for reject) and the
following ``*_acl_action`` stage acts on it without printing ``drop;``; such an
eval step counts as the drop or reject, which keeps the ACL row it came from
as the decisive one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field

_FLOW = re.compile(r"^\s*(\d+)\. (\S+) \(([^)]*)\): (.*), priority (\d+), uuid ([0-9a-f]+)\s*$")
_PIPELINE = re.compile(r'^(ingress|egress)\((.*)\)\s*$')
_FIELD = re.compile(r'(\w+)="([^"]*)"')
_OUTPUT = re.compile(r'/\* output to "([^"]+)", type "([^"]*)" \*/')
# The ACL verdict registers of OVN's tiered ACL stages (northd's REGBIT_ACL_VERDICT_DROP/REJECT).
_ACL_DROP = "reg8[17]"
_ACL_REJECT = "reg8[18]"


@dataclass(frozen=True)
class Pipeline:
    """Where a step runs: ``ingress``/``egress`` of datapath ``datapath`` (ports as ovn-trace shows them)."""

    direction: str
    datapath: str
    inport: str | None = None
    outport: str | None = None


@dataclass
class TraceStep:
    """One logical flow the packet hit, with the actions ovn-trace printed under it."""

    pipeline: Pipeline
    table: int
    stage: str
    match: str
    priority: int
    lflow: str  # the first 8 hex digits of the SB Logical_Flow uuid
    actions: list[str] = field(default_factory=list)

    @property
    def drops(self) -> bool:
        """``drop;``, or an ACL evaluation stage setting the drop verdict bit (OVN with ACL tiers)."""
        return any(a.rstrip(";").strip() == "drop" for a in self.actions) or self._sets_acl_verdict(_ACL_DROP)

    @property
    def rejects(self) -> bool:
        """``reject { ... }`` or the reject verdict bit: answered with a TCP reset or ICMP unreachable instead."""
        return any(a.startswith("reject") for a in self.actions) or self._sets_acl_verdict(_ACL_REJECT)

    def _sets_acl_verdict(self, bit: str) -> bool:
        # OVN >= 23.06 splits ACLs into an eval stage that only records the verdict in a register
        # bit and an action stage that acts on it; that action stage prints no ``drop;``.
        return self.stage.endswith("_eval") and "_acl" in self.stage and f"{bit} = 1;" in self.actions

    @property
    def output_port(self) -> str | None:
        for action in self.actions:
            found = _OUTPUT.search(action)
            if found:
                return found.group(1)
        return None


@dataclass
class ParsedTrace:
    """Every step in order, and the ports the packet was finally output to."""

    flow: str  # the ``# tcp,reg14=...`` OpenFlow rendering of the microflow, without ``# ``
    steps: list[TraceStep]

    @property
    def outputs(self) -> list[str]:
        """Logical ports the packet left through, in order (patch ports between datapaths included)."""
        return [p for p in (s.output_port for s in self.steps) if p is not None]

    @property
    def last_step(self) -> TraceStep | None:
        return self.steps[-1] if self.steps else None


def parse(text: str) -> ParsedTrace:
    """Parse ``ovn-trace --detailed`` output."""
    steps: list[TraceStep] = []
    flow = ""
    pipeline = Pipeline(direction="ingress", datapath="")
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("# ") and not flow:
            flow = line[2:].strip()
            continue
        underline = index + 1 < len(lines) and set(lines[index + 1].strip()) == {"-"}
        header = _PIPELINE.match(line.strip())
        if header and underline:
            fields = dict(_FIELD.findall(header.group(2)))
            pipeline = Pipeline(direction=header.group(1), datapath=fields.get("dp", ""),
                                inport=fields.get("inport"), outport=fields.get("outport"))
            continue
        found = _FLOW.match(line)
        if found:
            steps.append(TraceStep(pipeline=pipeline, table=int(found.group(1)), stage=found.group(2),
                                   match=found.group(4), priority=int(found.group(5)), lflow=found.group(6)))
            continue
        stripped = line.strip()
        if steps and stripped and not underline and not set(stripped) == {"-"} and line.startswith(" "):
            steps[-1].actions.append(stripped)
    return ParsedTrace(flow=flow, steps=steps)
