"""The side-by-side table of `pylium bench datapath` (one node and --cross-node): a column per
topology, ratios of the totals and median per-round ratios, slices' min-max, retransmits."""

from __future__ import annotations

from pylium.bench import datapath_xnode
from pylium.bench.datapath import Figures, figures_table


def _figures(k: float, extra: float) -> Figures:
    return Figures(
        throughput_gbps=2 * k,
        rr_per_s=1000 * k,
        conn_per_s=100 * k,
        retransmits=int(k),
        slices={
            "throughput_gbps": [k, k + extra],
            "rr_per_s": [500 * k, 500 * k + extra],
            "conn_per_s": [50 * k, 50 * k],
        },
    )


FIGURES = {"a": _figures(1, 0.5), "b": _figures(2, 0)}


def test_that_the_table_has_totals_ratios_slices_and_retransmits():
    assert figures_table(FIGURES, {"a": "A", "b": "B"}, {"A/B": ("a", "b")}, 10) == [
        "                                   A         B    A/B",
        "TCP throughput (Gbit/s)         2.00      4.00   0.50",
        "  slices min-max           1.00-1.50 2.00-2.00   0.62",
        "request/response (/s)           1000      2000   0.50",
        "  slices min-max             500-500 1000-1000   0.50",
        "connections (/s)                 100       200   0.50",
        "  slices min-max               50-50   100-100   0.50",
        "TCP retransmits                    1         2",
    ]


def test_that_the_cross_node_report_prints_the_table_then_the_pod_mtus():
    figures = {"native": FIGURES["a"], "tunnel": FIGURES["a"], "routed": FIGURES["b"]}
    report = datapath_xnode.Report(
        rounds=2,
        figures=figures,
        forwarded={"native": 7, "tunnel": 8},
        pod_mtu={"native": 1500, "tunnel": 1450, "routed": 1500},
    )
    lines = datapath_xnode.render_text(report).splitlines()
    assert lines[1:9] == figures_table(
        figures,
        {"native": "A native", "tunnel": "A tunnel", "routed": "C routed"},
        {"nat/C": ("native", "routed"), "tun/C": ("tunnel", "routed")},
        12,
    )
    assert lines[9].split() == ["pod", "MTU", "1500", "1450", "1500"]
    assert lines[-1].endswith("native 7, tunnel 8")
