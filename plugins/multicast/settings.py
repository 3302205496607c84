"""The ``[multicast]`` settings section: OVN's snooping timers, which upstream leaves at OVN's defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ovnk import setting

#: OVN's bounds of ``other_config:mcast_idle_timeout`` (seconds).
IDLE_TIMEOUT_RANGE = (15, 3600)
#: OVN's bounds of ``other_config:mcast_query_interval`` (seconds).
QUERY_INTERVAL_RANGE = (1, 3600)


def _within(bounds: tuple[int, int]) -> Callable[[int], str | None]:
    low, high = bounds

    def check(value: int) -> str | None:
        return None if value == 0 or low <= value <= high else f"must be 0 (OVN's default) or {low}-{high}"

    return check


@dataclass(frozen=True)
class MulticastSettings:
    """Snooping timers of every node switch; 0 leaves a key unset (OVN's default, as upstream)."""

    idle_timeout: int = setting(
        0, check=_within(IDLE_TIMEOUT_RANGE),
        help="seconds a learnt group member stays without a new report (mcast_idle_timeout); 0: OVN's 300")
    query_interval: int = setting(
        0, check=_within(QUERY_INTERVAL_RANGE),
        help="seconds between two IGMP/MLD queries of a node switch (mcast_query_interval); "
             "0: OVN's, half the idle timeout")

    def validate(self) -> None:
        idle = self.idle_timeout or 300
        if self.query_interval and self.query_interval >= idle:
            raise ValueError(f"query-interval ({self.query_interval}) must be shorter than the idle timeout "
                             f"({idle}): members would expire before they are asked to report again")
