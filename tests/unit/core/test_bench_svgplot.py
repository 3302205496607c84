"""``bench/svgplot.py``, the benchmarks' chart writer, and the scale bench's plot of a run's summary."""

from __future__ import annotations

import importlib.util
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
SVG = "{http://www.w3.org/2000/svg}"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def svgplot() -> ModuleType:
    return load("svgplot")


@pytest.mark.parametrize(("value", "top"), [(0.0, 1.0), (0.7, 1.0), (1.2, 2.0), (2.2, 2.5), (31.0, 50.0),
                                           (240.0, 250.0), (1000.0, 1000.0), (1001.0, 2000.0)])
def test_the_y_axis_ends_at_a_round_number_at_or_above_the_largest_value(svgplot: ModuleType, value: float,
                                                                        top: float) -> None:
    assert svgplot.nice_top(value) == top


def test_a_panel_draws_its_points_left_to_right_skips_the_unmeasured_and_draws_its_goal(svgplot: ModuleType) -> None:
    panel = svgplot.Panel("resync", "s", {"exec -> idle": [10.0, None, 40.0]}, goal=30.0)
    root = ElementTree.fromstring(svgplot.render("t", "pods", [2500, 5000, 10000], [panel]))
    circles = root.findall(f"{SVG}circle")
    assert len(circles) == 2, "the size with no figure has no point"
    (x1, y1), (x2, y2) = ((float(c.get("cx", "")), float(c.get("cy", ""))) for c in circles)
    assert x1 < x2 and y1 > y2, "more pods to the right, a bigger figure higher up (SVG's y grows downwards)"
    goal = [line for line in root.findall(f"{SVG}line") if line.get("stroke-dasharray")]
    assert len(goal) == 1
    goal_y = float(goal[0].get("y1", ""))
    assert y2 < goal_y < y1, "the goal 30 s sits between the 10 s and 40 s points"
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "resync (s)" in texts and "goal 30" in texts


def test_the_scale_bench_plots_every_figure_of_a_summary(svgplot: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("ovnk_lab")
    load("scale_support")
    scale = load("scale")
    size = {"pods": 250, "rss_mb": 80.0, "resync_s": 3.0, "resync_write_txns": 0, "pod_add_p50_ms": 30.0,
            "pod_add_p99_ms": 60.0, "nb_mb": 1.0, "sb_mb": 4.0}
    bigger = dict(size, pods=1000, rss_mb=95.0, resync_s=5.0, pod_add_p50_ms=36.0, failover_first_reconcile_s=3.5,
                  failover_lease_s=3.1, cold_start_rows_s=16.0, cpu_s=3.6)
    summary = {"quick": True, "shape": {"nodes": 10, "pods": 1000, "services": 100, "policies": 50},
               "sizes": {"0.25": size, "1": bigger},
               "idle": {"idle_s": 3, "idle_rss_change_pct": 0.0}}
    scale.plot(summary, tmp_path / "scale.svg")
    root = ElementTree.parse(tmp_path / "scale.svg").getroot()
    titles = {t.text for t in root.iter(f"{SVG}text") if t.get("font-weight") == "bold"}
    assert len(titles) == 9 and "restart resync (s)" in titles and "controller RSS (MB)" in titles
    # the goal of the pod-add panel is 1.5x the first size's p50
    assert "1.5x first p50 45" in [t.text for t in root.iter(f"{SVG}text")]
