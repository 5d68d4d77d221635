"""The load-time settings of every object that includes bpf/lib/lb.h: the node's default
backend selection, the Maglev table size M and the flow-hash seed.

M is both a `.rodata` constant (the datapath's `hash % M`) and the value size of the
`pylium_lb4_maglev` inner-map template (M u32 backend ids); the agent's inner maps must have
exactly that size, so both are set here together. `LBConfig().apply(spec)` is what socket LB
and any per-packet LB program (bpf/from_netdev.c) call before loading.
"""

from __future__ import annotations

from dataclasses import dataclass

from pylium.datapath.loader import ObjectSpec
from pylium.loadbalancer.encoding import LB_ALGORITHMS
from pylium.loadbalancer.maglev import DEFAULT_SEED, DEFAULT_TABLE_SIZE, TABLE_SIZES
from pylium.loadbalancer.model import Algorithm

MAP_MAGLEV = "pylium_lb4_maglev"


@dataclass(frozen=True)
class LBConfig:
    """Cilium's `bpf-lb-algorithm`, `maglev.tableSize` and `maglev.hashSeed`."""

    algorithm: Algorithm = Algorithm.RANDOM
    maglev_table_size: int = DEFAULT_TABLE_SIZE
    maglev_seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if self.maglev_table_size not in TABLE_SIZES:
            raise ValueError(f"maglev table size {self.maglev_table_size} not in {TABLE_SIZES}")

    def apply(self, spec: ObjectSpec) -> ObjectSpec:
        """`spec` with the constants and the Maglev inner-map size of this config."""
        return spec.with_constants(
            LB_ALGORITHM=LB_ALGORITHMS[self.algorithm.value],
            LB_MAGLEV_LUT_SIZE=self.maglev_table_size,
            LB_HASH_SEED=self.maglev_seed & 0xFFFFFFFF,
        ).with_inner_value_sizes(**{MAP_MAGLEV: 4 * self.maglev_table_size})
