"""The `vertical_lr` job kind: logistic regression trained on secret shares over the rows
of an alignment, one party holding the labels and others (or it too) the features.

The computing parties name an alignment (``"@name"``: their rows of one
earlier psi job, the same people in the same order; checked first, as in
``vertical_statistics``) and their feature columns with public bounds; the
label holder also names its 0/1 ``label`` column. A dealer node serves the
correlated randomness. The protocol is :mod:`invisible.protocols.mpc.
logistic`: features, labels, scores, residuals, gradients and weights stay
shared for the whole training; only masked values are opened.

Declared outputs:

- the training loss of each epoch's model (``losses = true``, the default):
  one scalar an epoch, the quadratic approximation of the mean log loss
  computed on shares, to the requester (each party releases a share) or a
  recipient party;
- the model stays at the parties under a name (default: the job id), as
  each party's additive share of every weight. (Opening each party's own
  weights to it is not offered: those weights are computed from the label
  holder's labels too, and one epoch of one batch gave a feature holder
  every label of a small alignment.)

Rules: a value beyond its bound refuses the job at every party alike (never
clipped, as for every kind over an alignment); k counts a mini-batch
(min(rows, batch_size)); learning_rate x l2 is at most 0.5 (a step's decay
never erases the steps before it); the labels must be 0 or 1 (a data check,
charged, naming no count).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from invisible.crypto.fixedpoint import decode
from invisible.errors import ConfigError, ProtocolError
from invisible.jobspec import JobResult
from invisible.kinds.alignments import ALIGNMENT_PREFIX, check_name
from invisible.kinds.base import (
    Datasets,
    DataUse,
    DeclaredUse,
    JobContext,
    JobKind,
    JobOutcome,
)
from invisible.kinds.declared import (
    WithDealer,
    aligned_rows,
    column_rows,
    numeric_matrix,
    opened_outputs,
    release,
    standardised,
    within_bounds,
)
from invisible.kinds.models import make_model
from invisible.kinds.params import ColumnInputs, ColumnsRef, Params, param
from invisible.kinds.results import Result, Table
from invisible.kinds.secure_sum import numeric_column
from invisible.kinds.splits import check_fraction, chosen_rows, rows_bounds, smallest_class
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.logistic import Schedule, drift, taylor_loss, train
from invisible.protocols.mpc.provider import DealerProvider
from invisible.protocols.mpc.shared import SharedArray, check_range

if TYPE_CHECKING:
    import pandas

FRACTIONAL_BITS = 16
#: The largest weight_bound a training job may declare (later jobs plan their ranges by it).
MAX_WEIGHT_BOUND = 1024.0
#: The most a step may shrink the weights by (learning_rate x l2), as for horizontal_lr.
MAX_DECAY = 0.5


def read_labels(kind: str, datasets: Datasets, ref: ColumnsRef) -> np.ndarray | None:
    """The label holder's label column as floats (None at a party that names none)."""
    if ref.label is None:
        return None
    return numeric_column(kind, datasets.get(ref.dataset), ref.dataset, ref.label).astype(
        np.float64)


def standardising(values: np.ndarray) -> np.ndarray:
    """(2, columns): the means and standard deviations (population) of `values`' columns;
    a constant column's deviation is taken as 1 (it is centred only)."""
    deviations = values.std(axis=0)
    return np.stack([values.mean(axis=0), np.where(deviations > 0, deviations, 1.0)])


def with_label(ref: ColumnsRef) -> tuple[str, ...]:
    """The columns a party's input uses: its features, and its label if it names one."""
    return ref.columns + ((ref.label,) if ref.label is not None else ())


def not_binary(labels: np.ndarray | None, ref: ColumnsRef) -> str | None:
    """The refusal of labels other than 0 and 1 (a data check: charged, naming no count)."""
    if labels is None or np.isin(labels, (0, 1)).all():
        return None
    return f"the label column '{ref.label}' holds values other than 0 and 1"


@dataclass(frozen=True, kw_only=True)
class VerticalLrParams(WithDealer, Params["VerticalLrResult"]):
    KIND: ClassVar[str] = "vertical_lr"

    inputs: ColumnInputs = param(
        "per computing party, the alignment (\"@name\") and its feature columns with a public "
        "bound on every |value| per column; the label holder also names its 0/1 label",
        example={"bank": {"dataset": "@common-customers", "columns": ["district"],
                          "bounds": [8.0], "label": "late_payment"},
                 "hospital": {"dataset": "@common-customers", "columns": ["district"],
                              "bounds": [8.0]},
                 "telco": {"dataset": "@common-customers", "columns": ["district"],
                           "bounds": [8.0]}})
    dealer: str = param("a dealer node of the job (serves correlated randomness, holds no data)",
                        example="dealer")
    recipient: str | None = param("a computing party that receives the losses (and releases "
                                  "them to the requester)", default=None)
    epochs: int = param("passes over the aligned rows", default=10, ge=1, le=1000)
    batch_size: int = param("rows per mini-batch", default=1024, ge=1, le=1_000_000)
    learning_rate: float = param("step size", default=0.1, gt=0, le=10)
    l2: float = param("L2 penalty on the weights and intercept", default=0.0, ge=0, le=100)
    seed: int = param("seed of the batch order (public)", default=0, ge=0, lt=2**63)
    weight_bound: float = param("public bound on every |weight| the fixed-point range is "
                                "planned for (kept with the model for later jobs)",
                                default=8.0, gt=0, le=MAX_WEIGHT_BOUND)
    model: str | None = param("the name the parties keep the model under (default: the job "
                              "id)", default=None, example="late-payments")
    sigmoid_limit: float = param("the sigmoid is 0.5 + clip(z, -a, a) / 4 for this a (2: "
                                 "SecretFlow's t1)", default=2.0, gt=0, le=2)
    losses: bool = param("open the training loss of each epoch's model", default=True)
    max_rows: int = param("public bound on the alignment's rows (the loss's fixed-point range "
                          "is planned for it)", default=100_000, ge=1, le=10_000_000)
    split: float = param("the fraction of the alignment's rows held out for testing, one of "
                         "0, 0.1, 0.2, 0.25, 0.3, 0.5 (the label holder draws them, stratified "
                         "by label, one draw per alignment and fraction; vertical_evaluate "
                         "with the same split scores them); 0: train on every row",
                         default=0.0, ge=0, lt=1)
    standardise: bool = param("each party standardises its own columns to mean 0 and "
                              "variance 1 on the training rows, locally (a column never "
                              "leaves its owner), and keeps the means and deviations with "
                              "its part of the model for later jobs; 'bounds' then bound the "
                              "standardised values", default=False)

    def check(self, parties: tuple[str, ...]) -> None:
        kind = self.KIND
        self.check_parties(parties, "name columns at two or more parties")
        holders = [p for p, ref in self.inputs.items() if ref.label is not None]
        if len(holders) != 1:
            raise ConfigError(f"{kind}: exactly one party names a label column")
        for party, ref in self.inputs.items():
            if not ref.dataset.startswith(ALIGNMENT_PREFIX):
                raise ConfigError(f"{kind}: party '{party}' must name an alignment (\"@name\")")
            if ref.bounds is None:
                raise ConfigError(f"{kind}: party '{party}' must give 'bounds', one per column")
        check_fraction(kind, self.split)
        if self.learning_rate * self.l2 > MAX_DECAY:
            raise ConfigError(f"{kind}: learning_rate x l2 must be at most {MAX_DECAY}")
        if self.model is not None:
            check_name(self.model)
        # Every range the protocol will check, planned from the parameters alone, so that no
        # error depends on the rows (a batch holds at most 2 batch_size - 1 rows).
        # Weights may move beyond weight_bound within an epoch (clipped at its end).
        within = self.weight_bound + drift(self.schedule(), self.feature_bound, self.max_rows)
        scores = (self.columns + 1) * self.feature_bound * self.weight_bound
        plans = [((self.columns + 1) * self.feature_bound * within * 2.0**FRACTIONAL_BITS,
                  "vertical_lr scores"),
                 ((2 * self.batch_size) * self.feature_bound * 8.0 * 2.0**FRACTIONAL_BITS,
                  "vertical_lr gradients"),
                 (8.0 * self.feature_bound * self.learning_rate * 2.0**FRACTIONAL_BITS,
                  "vertical_lr steps")]
        if self.losses:
            plans.append((2.0 * self.max_rows * (scores**2 + 8 * scores), "vertical_lr loss"))
        try:
            for bound, what in plans:
                check_range(bound, FRACTIONAL_BITS, what)
        except ProtocolError as exc:
            raise ConfigError(f"{exc}: lower the bounds, weight_bound or max_rows") from None

    @property
    def label_holder(self) -> str:
        return next(p for p, ref in self.inputs.items() if ref.label is not None)

    @property
    def columns(self) -> int:
        return sum(len(ref.columns) for ref in self.inputs.values())

    @property
    def feature_bound(self) -> float:
        return max(1.0, *(b for ref in self.inputs.values() for b in (ref.bounds or ())))

    def schedule(self) -> Schedule:
        return Schedule(self.epochs, self.batch_size, self.learning_rate, self.l2, self.seed,
                        self.weight_bound, self.max_rows, self.sigmoid_limit)


@dataclass(repr=False, eq=False)
class VerticalLrResult(Result):
    """Where the model is kept, and the training loss per epoch (if declared)."""

    model: str
    losses: list[float] = field(default_factory=list)
    #: Per epoch: the seconds of the slowest party, and the bytes all computing parties sent.
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_bytes: list[int] = field(default_factory=list)

    def history(self) -> pandas.DataFrame:
        """epoch, loss (if declared), seconds, bytes: one row per epoch."""
        import pandas

        columns: dict[str, Any] = {"epoch": range(1, len(self.epoch_seconds) + 1)}
        if self.losses:
            columns["loss"] = self.losses
        return pandas.DataFrame({**columns, "seconds": self.epoch_seconds,
                                 "bytes": self.epoch_bytes})

    def table(self) -> Table:
        if not self.losses:
            return Table(("model",), [(self.model,)])
        return Table(("epoch", "loss"), [(e + 1, v) for e, v in enumerate(self.losses)], 5)

    def facts(self) -> dict[str, Any]:
        return {"model": self.model, "losses": self.losses}

    def notes(self) -> list[str]:
        return [f"the parties keep the model as '{self.model}'; it never leaves them",
                "loss: the quadratic approximation log 2 - (y - 1/2) z + z^2/8 of the mean log "
                "loss, computed on shares"]


class VerticalLrKind(JobKind[VerticalLrParams, VerticalLrResult]):
    name = "vertical_lr"
    bounds_values = True
    params_type = VerticalLrParams
    summary = ("logistic regression trained on secret shares over an alignment: one party "
               "holds the labels, others the features; the model stays at the parties")

    def declare(self, params: VerticalLrParams, party_id: str) -> DeclaredUse | None:
        return params.declared_use(party_id, with_label)

    def plan(self, params: VerticalLrParams, party_id: str, datasets: Datasets,
             ) -> DataUse | None:
        if party_id == params.dealer:
            return None
        ref = params.inputs[party_id]
        rows = column_rows(params.KIND, datasets, ref.dataset, ref.columns)
        # A step's gradient averages one mini-batch; with a split, the smallest class's test
        # rows count too (their pattern is what the feature holders see).
        cell = min(rows_bounds(rows, params.split)[1], params.batch_size)
        if rows > params.max_rows:
            return DataUse(rows, cell, "the alignment has more rows than the job's max_rows")
        labels = read_labels(params.KIND, datasets, ref)
        if labels is not None and params.split:
            cell = min(cell, smallest_class(labels, params.split))
        return DataUse(rows, cell, not_binary(labels, ref))

    def run(self, params: VerticalLrParams, context: JobContext) -> JobOutcome:
        served = params.serve_as_dealer(context)
        if served is not None:
            return served
        channel = context.channel
        parties = params.computing(context.spec.parties)
        me = channel.party_id
        ref = params.inputs[me]
        assert ref.bounds is not None
        name = params.model or context.spec.job_id
        if context.models is None or context.models.exists(name, context.requester):
            raise ConfigError(f"{params.KIND}: a model named '{name}' exists on party '{me}'")
        alignment = aligned_rows(context, ref.dataset, parties)
        labels = read_labels(params.KIND, context.datasets, ref)
        rows = chosen_rows(context, parties, params.label_holder, labels, alignment,
                           params.split, "train")
        raw = numeric_matrix(context, params.KIND, ref.dataset, ref.columns)  # read once
        scaling = standardising(raw[rows]) if params.standardise else None
        features = within_bounds(context, params.KIND, standardised(raw, scaling), ref.bounds,
                                 parties)[rows]
        labels = None if labels is None else labels[rows]
        ctx = MpcContext(channel, parties, params.dealer, FRACTIONAL_BITS)
        provider = DealerProvider(channel, parties, params.dealer)
        counts = tuple(len(params.inputs[p].columns) for p in parties)
        bounds = tuple(b for p in parties for b in (params.inputs[p].bounds or ()))
        losses: list[np.ndarray] = []

        marks = [(time.monotonic(), channel.stats.bytes_sent)]

        def after_epoch(epoch: int, w: SharedArray, x: np.ndarray, y: SharedArray) -> None:
            if params.losses:
                losses.append(taylor_loss(ctx, provider, x, y, w, params.feature_bound).share)
            marks.append((time.monotonic(), channel.stats.bytes_sent))
            context.report(epoch + 1, params.epochs)

        try:
            weights = train(ctx, provider, counts, bounds, params.label_holder, rows.size,
                            params.schedule(), features, labels, context.rng, after_epoch)
            part, form = weights.share.ravel(), "shares"
            outcome = JobOutcome(rows_used=alignment.size)  # every row is read and checked
            outcome.openings = ctx.record.listed()
            if losses:
                release(ctx, context, SharedArray(np.concatenate(losses), 0.0, FRACTIONAL_BITS,
                                                  ctx.is_leader), params.recipient, outcome)
        finally:
            provider.close()
        context.models.save(make_model(
            name, params.KIND, context.spec.job_id, context.requester, parties,
            {p: list(params.inputs[p].columns) for p in parties}, params.label_holder, form,
            FRACTIONAL_BITS, part, params.weight_bound, scaling))
        epochs = [[round(t1 - t0, 6), b1 - b0] for (t0, b0), (t1, b1) in pairwise(marks)]
        # Metered at every computing party: the epochs and the model the job left here.
        outcome.notes["trained"] = {"epochs": params.epochs, "model": name}
        outcome.output = {"model": name, "epochs": epochs, "openings": outcome.openings}
        return outcome

    def finish(self, params: VerticalLrParams, job: JobResult) -> VerticalLrResult:
        names = {job.outputs[p].get("model") for p in params.computing(job.parties)}
        if len(names) != 1:
            raise ProtocolError("vertical_lr: the parties report different models")
        losses: list[float] = []
        if params.losses:
            opened = opened_outputs(job, params.computing(job.parties), params.recipient,
                                    params.epochs)
            losses = decode(opened, FRACTIONAL_BITS).tolist()
        epochs = np.array([job.outputs[p].get("epochs", []) for p in params.computing(
            job.parties)], dtype=np.float64).reshape(-1, params.epochs, 2)
        return VerticalLrResult(job, str(names.pop()), losses, epochs[:, :, 0].max(0).tolist(),
                                epochs[:, :, 1].sum(0).astype(int).tolist())
