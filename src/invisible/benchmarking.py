"""The benchmark contract (see benchmarks/README.md): timing, rows, table and JSON.

`invisible bench NAME...` loads ``benchmarks/NAME.py`` (from the current
folder, else from the source checkout the package was installed from); each
defines ``run(quick: bool) -> list[Row]``. Timings are medians of several
repetitions after a warm-up, with quartiles; a row that compares with a peer
carries the peer's value measured in the same run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from invisible.errors import ConfigError


@dataclass(frozen=True)
class Timing:
    median: float
    q1: float
    q3: float
    runs: int

    def describe(self) -> str:
        return (f"median {self.median * 1000:.1f} ms "
                f"(IQR {self.q1 * 1000:.1f}-{self.q3 * 1000:.1f}, n={self.runs})")


@dataclass
class Row:
    case: str
    metric: str
    better: str
    ours: float
    peer: str | None = None
    peer_value: float | None = None
    note: str = ""
    #: The timings the values come from (their runs and quartiles go into the JSON, in the
    #: row's unit): a value is `per` / seconds when `per` is given (a rate), else seconds
    #: times `scale`; the peer's the same, unless `peer_per` says its rate counts otherwise.
    timing: Timing | None = None
    peer_timing: Timing | None = None
    per: float | None = None
    scale: float = 1.0
    peer_per: float | None = None

    def _spread(self, timing: Timing, prefix: str, per: float | None) -> dict[str, Any]:
        if per is not None:
            low, high = per / timing.q3, per / timing.q1
        else:
            low, high = timing.q1 * self.scale, timing.q3 * self.scale
        return {f"{prefix}runs": timing.runs, f"{prefix}q1": low, f"{prefix}q3": high}

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items()
                if k not in ("timing", "peer_timing", "per", "scale", "peer_per")}
        if self.peer is None:
            del data["peer"], data["peer_value"]
        if self.timing is not None:
            data |= self._spread(self.timing, "", self.per)
        if self.peer_timing is not None:
            data |= self._spread(self.peer_timing, "peer_",
                                 self.per if self.peer_per is None else self.peer_per)
        return data


def timing_of(samples: Sequence[float]) -> Timing:
    ordered = sorted(samples)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return Timing(statistics.median(ordered), q1, q3, len(ordered))


def measure(action: Callable[[], object], repeats: int, warmup: int = 1) -> Timing:
    """Wall time of `action`: `warmup` unmeasured runs, then the median of `repeats`."""
    for _ in range(warmup):
        action()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return timing_of(samples)


def peer_python(name: str, requirements: Sequence[str], create: bool) -> Path | str:
    """The interpreter of a peer's own virtual environment (``.bench-venvs/NAME``).

    Some peers pin libraries this project cannot share (SPU needs numpy < 2),
    so they run in a venv of their own, made from PyPI on first use when
    `create` is true. Returns the interpreter, or why there is none.
    """
    import subprocess
    import sys

    folder = Path.cwd() / ".bench-venvs" / name
    python = folder / "bin" / "python"
    if python.exists():
        return python
    if not create:
        return f"no venv for {name} yet (a full run creates .bench-venvs/{name})"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements],
                       check=True, timeout=1200, capture_output=True)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"could not install {' '.join(requirements)}: {exc}"
    return python


#: What a peer's note says when it did not run here (and why): a peer row without a value
#: must carry one of them.
NOT_RUN = ("no venv for ", "could not install ", "not installed", "failed: ", "over ",
           "did not finish")


def run_peer(name: str, requirements: Sequence[str], script: str, args: Sequence[str],
             create: bool, timeout_s: float) -> str | list[str]:
    """Run `script` (python -c) in a peer's venv (see `peer_python`): the lines it printed,
    or why it did not run or failed."""
    import subprocess

    python = peer_python(name, requirements, create)
    if isinstance(python, str):
        return python
    try:
        done = subprocess.run([str(python), "-c", script, *args], capture_output=True,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"over {timeout_s:g} s: {name}"
    if done.returncode != 0:
        return f"failed: {name}: {done.stderr.strip().splitlines()[-1:]}"
    return done.stdout.strip().splitlines()


def benchmark_dirs() -> list[Path]:
    here = Path.cwd() / "benchmarks"
    checkout = Path(__file__).resolve().parents[2] / "benchmarks"
    return [d for d in dict.fromkeys([here, checkout]) if d.is_dir()]


def load_benchmark(name: str) -> ModuleType:
    for folder in benchmark_dirs():
        path = folder / f"{name}.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(f"invisible_bench_{name}", path)
            if spec is None or spec.loader is None:
                break
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up while defined
            spec.loader.exec_module(module)
            return module
    known = sorted({p.stem for d in benchmark_dirs() for p in d.glob("*.py")
                    if not p.stem.startswith("_")})
    raise ConfigError(f"no benchmark '{name}' (known: {', '.join(known) or 'none found'})")


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or 0.01 <= abs(value) < 1e6:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def table(name: str, rows: Sequence[Row]) -> str:
    header = ("case", "metric", "ours", "peer", "peer value", "ratio", "note")
    lines = [header]
    for row in rows:
        ratio = "-"
        if row.peer_value:
            higher = row.better == "higher"
            ratio = f"{(row.ours / row.peer_value if higher else row.peer_value / row.ours):.2f}x"
        lines.append((row.case, row.metric, _format(row.ours), row.peer or "-",
                      _format(row.peer_value), ratio, row.note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = [f"## {name}", ""]
    out.append("| " + " | ".join(h.ljust(w) for h, w in zip(header, [*widths, 4], strict=False)) + " |")
    out.append("|" + "|".join("-" * (w + 2) for w in [*widths, 4]) + "|")
    for line in lines[1:]:
        cells = [c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)] + [line[-1]]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def run_benchmarks(names: Sequence[str], quick: bool, json_path: Path | None) -> int:
    """Run, print a table per benchmark, and write one JSON document: the machine, then one
    entry per benchmark with its rows (the same shape for one benchmark or several)."""
    documents = []
    for name in names:
        module = load_benchmark(name)
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows: list[Row] = module.run(quick=quick)
        print(table(name, rows), flush=True)
        print()
        documents.append({"benchmark": name, "started": started,
                          "rows": [r.to_json() for r in rows]})
    if json_path is not None:
        payload: Any = {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "quick": quick, "benchmarks": documents}
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
    return 0
