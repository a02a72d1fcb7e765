"""Every job kind this build runs, by name; a node and a coordinator share this table.

Adding a kind: its module in this package, one line here, and its tests.
A kind's ``version`` changes when its parameters or protocol change in a
way older nodes cannot follow; a node refuses a job of another version.
"""

from __future__ import annotations

from typing import Any

from invisible.errors import ConfigError
from invisible.kinds.bandwidth import BandwidthKind
from invisible.kinds.base import JobKind
from invisible.kinds.connectivity import ConnectivityKind
from invisible.kinds.horizontal_lr import HorizontalLrKind
from invisible.kinds.mul_benchmark import MulBenchmarkKind
from invisible.kinds.paillier_sum import PaillierSumKind
from invisible.kinds.params import Params
from invisible.kinds.psi import PsiKind
from invisible.kinds.secure_sum import SecureSumKind
from invisible.kinds.statistics import StatisticsKind
from invisible.kinds.vertical_evaluate import VerticalEvaluateKind
from invisible.kinds.vertical_lr import VerticalLrKind
from invisible.kinds.vertical_predict import VerticalPredictKind
from invisible.kinds.vertical_statistics import VerticalStatisticsKind
from invisible.text import printable

AnyKind = JobKind[Any, Any]

KINDS: tuple[AnyKind, ...] = (
    SecureSumKind(),
    PaillierSumKind(),
    StatisticsKind(),
    PsiKind(),
    VerticalStatisticsKind(),
    HorizontalLrKind(),
    VerticalLrKind(),
    VerticalPredictKind(),
    VerticalEvaluateKind(),
    ConnectivityKind(),
    BandwidthKind(),
    MulBenchmarkKind(),
)


def kinds_by_name(kinds: tuple[AnyKind, ...] = KINDS) -> dict[str, AnyKind]:
    return {kind.name: kind for kind in kinds}


def find_kind(name: str, version: int | None = None,
              kinds: dict[str, AnyKind] | None = None) -> AnyKind:
    """The kind called `name` (of `version`, if given); ConfigError naming what exists."""
    table = kinds if kinds is not None else kinds_by_name()
    kind = table.get(name)
    if kind is None:
        raise ConfigError(f"unknown job kind '{printable(name, 64)}' (known: "
                          f"{', '.join(sorted(table))})")
    if version is not None and version != kind.version:
        raise ConfigError(f"job kind '{name}' version {version} is not run here (this build "
                          f"runs version {kind.version})")
    return kind


def kind_of(params: Params[Any]) -> AnyKind:
    """The kind whose parameters `params` are."""
    kind = find_kind(params.KIND)
    if not isinstance(params, kind.params_type):
        raise ConfigError(f"{type(params).__name__} are not the parameters of '{kind.name}'")
    return kind
