"""The compiles each op's launcher can ask for on a GPU target, as data: every op module exposes
`launch_configs(arch)`, built from the same selection helpers its launcher calls, so that a check outside the
package (tests/test_kernels_launch.py) can compile each one for sm_80 and sm_90 without a GPU."""

import dataclasses
from typing import Any

DTYPES = ("bf16", "fp16", "fp32")  # input dtypes the launchers take on a GPU


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """One compile a launcher can ask for on target `arch` (compute capability, e.g. 90): the kernel, its
    constexprs as (name, value) pairs, warps, stages (None: Triton's default) and the input dtype."""

    kernel: Any
    constexprs: tuple[tuple[str, Any], ...]
    num_warps: int
    num_stages: int | None
    dtype: str
    arch: int

    @classmethod
    def make(cls, kernel: Any, constexprs: dict[str, Any], num_warps: int, num_stages: int | None, dtype: str,
             arch: int) -> "LaunchConfig":
        """A config from a constexpr dict (kept in the kernel's argument order)."""
        return cls(kernel, tuple(constexprs.items()), num_warps, num_stages, dtype, arch)

    def describe(self) -> str:
        """The constexprs as NAME=value, the dtype operand left out (it is the input dtype)."""
        return " ".join(f"{name}={value}" for name, value in self.constexprs if name != "DOT_DTYPE")


def powers_of_two(limit: int) -> list[int]:
    """1, 2, 4, ... up to `limit`: the row widths that reach every block a next-power-of-two launcher picks."""
    return [1 << k for k in range(limit.bit_length()) if 1 << k <= limit]
