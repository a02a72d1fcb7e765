"""Job files: one TOML per job, run by `invisible job run job.toml`.

    [job]
    kind = "secure_sum"
    coordinator = "coordinator.toml"     # relative to this file
    parties = ["bank", "hospital", "telco"]   # optional; default: those the parameters name
    bound = 100000.0                     # any other key is a parameter of the kind
    group_by = "district"
    categories = 8

    [inputs]                             # per party: what it contributes
    bank = { dataset = "customers", column = "monthly_spend" }

`invisible job kinds` lists every kind's parameters; `invisible job template
KIND` prints a commented file for one kind.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invisible.coordinator.federation import Federation
from invisible.errors import ConfigError
from invisible.kinds.registry import find_kind
from invisible.kinds.results import Result

_RESERVED = {"kind", "coordinator", "parties"}


@dataclass(frozen=True)
class JobFile:
    source: Path
    kind: str
    coordinator: Path
    parties: tuple[str, ...] | None
    params: dict[str, Any]


def load_job_file(path: Path | str) -> JobFile:
    source = Path(path).resolve()
    try:
        document = tomllib.loads(source.read_text())
    except OSError as exc:
        raise ConfigError(f"job file unreadable: {source} ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None
    job = document.get("job")
    if not isinstance(job, dict) or not isinstance(job.get("kind"), str):
        raise ConfigError(f"{source}: [job] with a 'kind' is required")
    if not isinstance(job.get("coordinator"), str):
        raise ConfigError(f"{source}: job.coordinator must name the coordinator config")
    unknown = sorted(set(document) - {"job", "inputs"})
    if unknown:
        raise ConfigError(f"{source}: unknown table(s) {', '.join(unknown)}")
    params = {k: v for k, v in job.items() if k not in _RESERVED}
    inputs = document.get("inputs")
    if inputs is not None:
        params["inputs"] = inputs
    parties = job.get("parties")
    if parties is not None and not (
        isinstance(parties, list) and all(isinstance(p, str) for p in parties)
    ):
        raise ConfigError(f"{source}: job.parties must be a list of party ids")
    return JobFile(source, job["kind"], source.parent / job["coordinator"],
                   tuple(parties) if parties else None, params)


def run_job_file(path: Path | str) -> Result:
    """Run the job a file describes and return its kind's typed result.

    The parameters are checked against the kind's declaration before the
    coordinator config is even read, so a mistake costs no connection.
    """
    job = load_job_file(path)
    kind = find_kind(job.kind)
    params = kind.params_type.read(job.params)
    if job.parties is not None:
        kind.params_type.parse(job.params, job.parties)
    with Federation.from_config(job.coordinator) as federation:
        result: Result = federation.run(params, job.parties)
        return result
