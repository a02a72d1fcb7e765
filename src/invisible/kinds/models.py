"""Trained models kept at the parties, by name: each party's own part, never released.

A training job (``vertical_lr``) leaves at every computing party a **model**:
its part of the weights (its additive share of all of them), with what later
jobs need to use it: the job, the parties in job order, each party's
columns, the label holder, the fixed-point resolution and, when the job
standardised the features, this party's own columns' means and standard
deviations on the training rows (its own data's, never sent anywhere). It
is one file, ``<name>.npz`` in the node's models folder, written whole and
never replaced (:func:`.alignments.write_new`), so it survives restarts; a
model is its requester's (another is told there is none). The operator
lists and deletes models with ``invisible node models --config party.toml
[--delete NAME --requester R]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from invisible.errors import ConfigError
from invisible.kinds.alignments import check_name, utc_now, write_new

_TIME = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Model:
    name: str
    kind: str
    job_id: str
    requester: str
    #: The computing parties in job order, and each one's columns.
    parties: tuple[str, ...]
    columns: dict[str, list[str]]
    label_holder: str
    #: "shares": an additive share of every weight (the only form a model is kept in).
    form: str
    fractional_bits: int
    created: str
    #: This party's part: its share of every weight (ring elements).
    part: np.ndarray
    #: The bound every |weight| was clipped to in training (later jobs plan their ranges by it).
    weight_bound: float
    #: (2, columns): this party's columns' means and standard deviations, if standardised.
    scaling: np.ndarray | None = None

    def meta(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "job_id": self.job_id,
                "requester": self.requester, "parties": list(self.parties),
                "columns": self.columns, "label_holder": self.label_holder, "form": self.form,
                "fractional_bits": self.fractional_bits, "created": self.created,
                "weight_bound": self.weight_bound}


def make_model(name: str, kind: str, job_id: str, requester: str, parties: tuple[str, ...],
               columns: dict[str, list[str]], label_holder: str, form: str,
               fractional_bits: int, part: np.ndarray, weight_bound: float,
               scaling: np.ndarray | None = None) -> Model:
    return Model(check_name(name), kind, job_id, requester, tuple(parties), dict(columns),
                 label_holder, form, fractional_bits, utc_now().strftime(_TIME), part,
                 float(weight_bound), scaling)


class ModelStore:
    """A node's models, one file each in `folder`/<requester>/: each requester names its own
    models (another requester's names are neither visible nor taken)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, name: str, requester: str) -> Path:
        return self.folder / check_name(requester) / f"{check_name(name)}.npz"

    def save(self, model: Model) -> None:
        """Keep a new model; a requester uses a name once (ConfigError if it exists)."""
        scaling = {} if model.scaling is None else {"scaling": model.scaling}
        write_new(self._path(model.name, model.requester), model.meta(), "a model",
                  part=model.part, **scaling)

    def exists(self, name: str, requester: str) -> bool:
        return self._path(name, requester).exists()

    def get(self, name: str, requester: str) -> Model:
        """`requester`'s model called `name`."""
        path = self._path(name, requester)
        if not path.exists():
            raise ConfigError(f"no model named '{name}' on this node")
        return self._read(path)

    def list(self) -> list[Model]:
        return [self._read(p) for p in sorted(self.folder.glob("*/*.npz"))] \
            if self.folder.exists() else []

    def delete(self, name: str, requester: str) -> None:
        path = self._path(name, requester)
        if not path.exists():
            raise ConfigError(f"no model named '{name}' of '{requester}' on this node")
        path.unlink()

    @staticmethod
    def _read(path: Path) -> Model:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                part = np.asarray(data["part"])
                scaling = np.asarray(data["scaling"]) if "scaling" in data.files else None
            return Model(meta["name"], meta["kind"], meta["job_id"], meta["requester"],
                         tuple(meta["parties"]), dict(meta["columns"]), meta["label_holder"],
                         meta["form"], int(meta["fractional_bits"]), meta["created"], part,
                         float(meta["weight_bound"]), scaling)
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"model file {path} cannot be read") from None
