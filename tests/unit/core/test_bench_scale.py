"""The pure helpers of ``bench/scale.py`` (``bench/scale_support.py``): shapes, percentiles, parsers."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "scale_support.py"


@pytest.fixture(scope="module")
def support() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scale_support", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["scale_support"] = module
    spec.loader.exec_module(module)
    return module


def test_shapes_scale_with_a_home_for_every_object(support: ModuleType) -> None:
    full = support.FULL
    assert (full.nodes, full.pods, full.services, full.policies) == (100, 10_000, 1_000, 500)
    quarter = full.scaled(0.25)
    assert (quarter.nodes, quarter.pods, quarter.services, quarter.policies, quarter.namespaces) == (25, 2500, 250, 125, 25)
    quick = full.scaled(0.1)
    small = quick.scaled(0.25)  # 2.5 nodes and namespaces round up, counts round
    assert (small.nodes, small.pods, small.namespaces) == (3, 250, 3)
    for shape, base in ((quarter, full), (small, quick)):
        # object i lives in namespace i // per_namespace (of the full shape): every one of them must exist
        for kind in ("pods", "services", "policies"):
            assert (getattr(shape, kind) - 1) // base.per_namespace(kind) < shape.namespaces
        assert (shape.pods - 1) // (base.pods // base.nodes) < shape.nodes


def test_percentile_is_nearest_rank(support: ModuleType) -> None:
    values = [float(v) for v in range(1, 101)]
    assert support.percentile(values, 0.5) == 50.0
    assert support.percentile(values, 0.99) == 99.0
    assert support.percentile(list(reversed(values)), 1.0) == 100.0
    assert support.percentile([3.0], 0.5) == 3.0
    with pytest.raises(ValueError):
        support.percentile([], 0.5)


def test_metric_sum_filters_labels(support: ModuleType) -> None:
    text = (
        "# HELP ovnk_nb_txn_total NB transactions by owner and outcome.\n"
        "# TYPE ovnk_nb_txn_total counter\n"
        'ovnk_nb_txn_total{owner="Pod",result="committed"} 7.0\n'
        'ovnk_nb_txn_total{owner="Node",result="committed"} 2.0\n'
        'ovnk_nb_txn_total{owner="Pod",result="unchanged"} 100.0\n'
        "# HELP ovnk_controller_leader 1 while this controller holds the leader lease.\n"
        "# TYPE ovnk_controller_leader gauge\n"
        "ovnk_controller_leader 1.0\n"
    )
    assert support.metric_sum(text, "ovnk_nb_txn_total", result="committed") == 9.0
    assert support.metric_sum(text, "ovnk_nb_txn_total") == 109.0
    assert support.metric_sum(text, "ovnk_controller_leader") == 1.0
    assert support.metric_sum(text, "ovnk_missing") == 0.0


def test_parse_proc_usage_handles_spaces_in_the_command_name(support: ModuleType) -> None:
    status = "Name:\tpython3\nVmPeak:\t 2000 kB\nVmRSS:\t   51200 kB\nThreads:\t4\n"
    fields = ["S", "1", "2", "3", "0", "-1", "4194304", "10", "0", "0", "0", "250", "50", "0", "0"]
    stat = "1234 (my (odd) name) " + " ".join(fields)
    rss, cpu = support.parse_proc_usage(status, stat, 100)
    assert rss == 51200 * 1024
    assert cpu == pytest.approx(3.0)


def test_proc_usage_of_this_process_grows_with_work(support: ModuleType) -> None:
    rss, before = support.proc_usage(os.getpid())
    assert rss > 10 * 2**20
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    _, after = support.proc_usage(os.getpid())
    assert after - before >= 0.2


def test_parse_northd_appctl_output(support: ModuleType) -> None:
    stopwatch = (
        "Statistics for 'ovn-northd-loop'\n  Total samples: 23\n  Maximum: 8 msec\n  Minimum: 0 msec\n"
        "  95th percentile: 3.000000 msec\n  Short term average: 0.1 msec\n  Long term average: 0.9 msec\n"
        "Statistics for 'ovnsb_db_run'\n  Total samples: 5\n  Maximum: 0 msec\n"
    )
    watches = support.parse_stopwatch(stopwatch)
    assert watches["ovn-northd-loop"] == {"samples": 23.0, "max_ms": 8.0, "min_ms": 0.0, "p95_ms": 3.0}
    assert watches["ovnsb_db_run"]["samples"] == 5.0
    engine = support.parse_engine_stats(
        "Node: northd\n- recompute:            0\n- compute:             15\n- cancel:               0\n"
        "Node: lflow\n- recompute:            2\n- compute:              5\n- cancel:               1\n")
    assert engine == {"northd": {"recompute": 0, "compute": 15, "cancel": 0},
                      "lflow": {"recompute": 2, "compute": 5, "cancel": 1}}
