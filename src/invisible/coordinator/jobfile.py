"""Job files: one TOML per job, run by `invisible job run job.toml`.

    [job]
    kind = "secure_sum"
    coordinator = "coordinator.toml"     # relative to this file
    parties = ["bank", "hospital", "telco"]   # optional; default: those in [inputs], else all
    bound = 100000.0                     # any other key is a parameter of the kind
    group_by = "district"
    categories = 8

    [inputs]                             # per party: what it contributes
    bank = { dataset = "customers", column = "monthly_spend" }
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invisible.coordinator.federation import Federation
from invisible.coordinator.secure_sum import run_secure_sum_params
from invisible.errors import ConfigError
from invisible.node.secure_sum import SecureSumParams

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
    if parties is None and isinstance(inputs, dict):
        parties = list(inputs)
    if parties is not None and not (
        isinstance(parties, list) and all(isinstance(p, str) for p in parties)
    ):
        raise ConfigError(f"{source}: job.parties must be a list of party ids")
    return JobFile(source, job["kind"], source.parent / job["coordinator"],
                   tuple(parties) if parties else None, params)


def run_job_file(path: Path | str) -> dict[str, Any]:
    """Run the job and return a JSON-ready summary: outputs and each party's record."""
    job = load_job_file(path)
    with Federation.from_config(job.coordinator) as federation:
        if job.kind == "secure_sum":
            if not isinstance(job.params.get("inputs"), dict):
                raise ConfigError(f"{job.source}: a secure_sum job needs an [inputs] table")
            params = SecureSumParams.from_json(job.params, tuple(job.params["inputs"]))
            result = run_secure_sum_params(federation, params)
            return {
                "job_id": result.job_id, "kind": job.kind, "recipient": result.recipient,
                "total": None if result.total is None else result.total.tolist(),
                "records": {p: r.__dict__ for p, r in result.records.items()},
            }
        generic = federation.run(job.kind, job.params, job.parties)
        return {
            "job_id": generic.job_id, "kind": job.kind, "outputs": generic.outputs,
            "records": {p: r.__dict__ for p, r in generic.records.items()},
        }
