"""The datasets a party node registers: CSV or Parquet files, or PostgreSQL tables or
queries, with declared, typed columns.

Files are read and type-checked when the node starts, so a wrong path, a
missing column or a value of the wrong type stops the node with a clear
error instead of failing a job later. Protocols get whole columns as numpy
arrays; the values themselves never appear in an error message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from invisible.errors import ConfigError
from invisible.kinds.alignments import ALIGNMENT_PREFIX, Alignment, AlignmentStore, ids_digest
from invisible.node.config import DatasetConfig
from invisible.node.sources import Source, read_columns

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Dataset:
    dataset_id: str
    #: Where it was read from: the file, or the PostgreSQL table.
    origin: str
    columns: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def column(self, name: str) -> np.ndarray:
        found = self.columns.get(name)
        if found is None:
            # The dataset's other columns are not listed: a requester learns nothing of
            # columns it may not use (the policy allowed this name before it was looked up).
            raise ConfigError(f"dataset '{self.dataset_id}' has no column '{name}'")
        return found


def load_dataset(config: DatasetConfig) -> Dataset:
    """Read and type-check a dataset's declared columns (:mod:`invisible.node.sources`),
    then apply its `missing` rule: refuse the dataset naming the column, or drop the rows
    and count them in the log."""
    columns = read_columns(Source(config.dataset_id, config.path, config.columns,
                                  config.format, config.delimiter, config.database))
    rows = len(next(iter(columns.values()))[0]) if columns else 0
    usable = np.ones(rows, dtype=bool)
    for name, (_, present) in columns.items():
        if not present.all() and config.missing == "refuse":
            raise ConfigError(
                f"dataset '{config.dataset_id}': column '{name}' of {config.describe()} has missing "
                "or non-finite values; set missing = \"drop\" to drop those rows")
        usable &= present
    dropped = int(usable.size - np.count_nonzero(usable))
    if dropped:
        log.warning("dataset '%s': %d row(s) with missing or non-finite values dropped",
                    config.dataset_id, dropped)
    return Dataset(config.dataset_id, config.describe(),
                   {name: values[usable] if dropped else values
                    for name, (values, _) in columns.items()})


@dataclass(frozen=True)
class AlignedDataset:
    """A dataset's rows of an alignment, in the alignment's order (a view: nothing copied
    until a column is read)."""

    dataset_id: str
    source: Dataset
    rows: np.ndarray

    def column(self, name: str) -> np.ndarray:
        return self.source.column(name)[self.rows]


class DatasetRegistry:
    """The datasets one node holds, by id; "@name" is the alignment `name` of one of them
    (see :mod:`invisible.kinds.alignments`)."""

    def __init__(self, datasets: dict[str, Dataset],
                 alignments: AlignmentStore | None = None) -> None:
        self._datasets = datasets
        self._alignments = alignments
        #: Alignments (name, digest) whose ids were found to match their dataset.
        self._matching: set[tuple[str, str]] = set()

    @classmethod
    def load(cls, configs: dict[str, DatasetConfig],
             alignments: AlignmentStore | None = None) -> DatasetRegistry:
        return cls({d: load_dataset(c) for d, c in configs.items()}, alignments)

    def _alignment(self, dataset_id: str, requester: str | None = None) -> Alignment:
        if self._alignments is None:
            raise ConfigError("this node keeps no alignments")
        return self._alignments.get(dataset_id.removeprefix(ALIGNMENT_PREFIX),
                                    requester=requester)

    def alignment_for(self, dataset_id: str, requester: str) -> Alignment | None:
        """The alignment `dataset_id` names ("@name"), if it does: it must be `requester`'s
        and in force (ConfigError: no such alignment, or expired). None for a dataset."""
        if dataset_id.startswith(ALIGNMENT_PREFIX):
            return self._alignment(dataset_id, requester)
        return None

    def ids(self) -> list[str]:
        return sorted(self._datasets)

    def get(self, dataset_id: str) -> Dataset | AlignedDataset:
        if dataset_id.startswith(ALIGNMENT_PREFIX):
            alignment = self._alignment(dataset_id)
            source = self._registered(alignment.dataset)
            # Datasets are loaded once, at start: an alignment checked against them stays
            # checked (a job reads one several times: to plan, to run, for its label).
            if (alignment.name, alignment.digest) not in self._matching:
                ids = source.column(alignment.column)
                inside = alignment.size == 0 or int(alignment.rows.max()) < ids.shape[0]
                if not inside or ids_digest(ids[alignment.rows]) != alignment.digest:
                    raise ConfigError(f"alignment '{alignment.name}' no longer matches dataset "
                                      f"'{alignment.dataset}' (its rows changed since the psi "
                                      "job that made it): run psi again")
                self._matching.add((alignment.name, alignment.digest))
            return AlignedDataset(dataset_id, source, alignment.rows)
        return self._registered(dataset_id)

    def _registered(self, dataset_id: str) -> Dataset:
        found = self._datasets.get(dataset_id)
        if found is None:
            raise ConfigError(
                f"no dataset '{dataset_id}' is registered "
                f"(registered: {', '.join(self.ids()) or 'none'})"
            )
        return found
