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
  each party's additive share of every weight (``model_to = "shares"``, the
  default), or, with ``model_to = "blocks"``, opened block by block to the
  party that holds those columns (the intercept to the label holder): each
  party then learns its own weights, and every policy must allow it
  (a recipient of its own data's outputs, which the policy always allows).

Rules: a value beyond its bound refuses the job at every party alike (never
clipped, as for every kind over an alignment); k counts a mini-batch
(min(rows, batch_size)); learning_rate x l2 is at most 0.5 (a step's decay
never erases the steps before it); the labels must be 0 or 1 (a data check,
charged, naming no count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from invisible.crypto.fixedpoint import decode
from invisible.errors import ConfigError, ProtocolError
from invisible.jobspec import JobResult
from invisible.kinds.alignments import ALIGNMENT_PREFIX, check_name
from invisible.kinds.base import (
    OUT_OF_BOUND_RULE,
    Datasets,
    DataUse,
    DeclaredUse,
    JobContext,
    JobKind,
    JobOutcome,
    refuse_alike,
)
from invisible.kinds.declared import WithDealer, aligned_rows, opened_outputs, release
from invisible.kinds.models import make_model
from invisible.kinds.params import ColumnInputs, Params, param
from invisible.kinds.results import Result, Table
from invisible.kinds.secure_sum import numeric_column
from invisible.protocols.mpc.arithmetic import reveal
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.dealer import run_dealer
from invisible.protocols.mpc.logistic import Schedule, taylor_loss, train
from invisible.protocols.mpc.provider import DealerProvider
from invisible.protocols.mpc.shared import SharedArray, check_range

if TYPE_CHECKING:
    import pandas

FRACTIONAL_BITS = 16
#: The most a step may shrink the weights by (learning_rate x l2), as for horizontal_lr.
MAX_DECAY = 0.5


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
                                "planned for", default=8.0, gt=0, le=1024)
    model: str | None = param("the name the parties keep the model under (default: the job "
                              "id)", default=None, example="late-payments")
    model_to: str = param("the model stays as shares at the parties, or each party learns "
                          "the weights of its own columns", default="shares",
                          choices=("shares", "blocks"))
    losses: bool = param("open the training loss of each epoch's model", default=True)

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
        if self.learning_rate * self.l2 > MAX_DECAY:
            raise ConfigError(f"{kind}: learning_rate x l2 must be at most {MAX_DECAY}")
        if self.model is not None:
            check_name(self.model)
        try:
            check_range((self.columns + 1) * self.feature_bound * self.weight_bound
                        * 2.0**FRACTIONAL_BITS, FRACTIONAL_BITS, "vertical_lr scores")
        except ProtocolError as exc:
            raise ConfigError(f"{exc}: lower the bounds or weight_bound") from None

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
                        self.weight_bound)


@dataclass(repr=False, eq=False)
class VerticalLrResult(Result):
    """Where the model is kept, and the training loss per epoch (if declared)."""

    model: str
    losses: list[float] = field(default_factory=list)

    def history(self) -> pandas.DataFrame:
        import pandas

        return pandas.DataFrame({"epoch": range(1, len(self.losses) + 1), "loss": self.losses})

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
        return params.declared_use(
            party_id, lambda ref: ref.columns + ((ref.label,) if ref.label is not None else ()))

    def plan(self, params: VerticalLrParams, party_id: str, datasets: Datasets,
             ) -> DataUse | None:
        if party_id == params.dealer:
            return None
        ref = params.inputs[party_id]
        dataset = datasets.get(ref.dataset)
        rows = 0
        for name in ref.columns:
            rows = int(numeric_column(params.KIND, dataset, ref.dataset, name).shape[0])
        cell = min(rows, params.batch_size)  # a step's gradient averages one mini-batch
        if ref.label is not None:
            label = numeric_column(params.KIND, dataset, ref.dataset, ref.label)
            if not np.isin(label, (0, 1)).all():
                return DataUse(rows, cell, f"the label column '{ref.label}' holds values "
                                           "other than 0 and 1")
        return DataUse(rows, cell)

    def run(self, params: VerticalLrParams, context: JobContext) -> JobOutcome:
        channel = context.channel
        parties = params.computing(context.spec.parties)
        if channel.party_id == params.dealer:
            return JobOutcome(output={"tuples_served": run_dealer(channel, parties,
                                                                  context.rng)})
        me = channel.party_id
        ref = params.inputs[me]
        assert ref.bounds is not None
        name = params.model or context.spec.job_id
        if context.models is None or context.models.exists(name):
            raise ConfigError(f"{params.KIND}: a model named '{name}' exists on party '{me}'")
        alignment = aligned_rows(context, ref.dataset, parties)
        dataset = context.datasets.get(ref.dataset)
        features = np.column_stack([numeric_column(params.KIND, dataset, ref.dataset, c)
                                    for c in ref.columns]).astype(np.float64)
        refuse_alike(context, parties, bool((np.abs(features) > np.asarray(ref.bounds)).any()),
                     OUT_OF_BOUND_RULE, "a value lies beyond the job's declared bound at one "
                     "or more parties (vertical_lr refuses such values; it never clips them)",
                     tag="/bounds")
        labels = None
        if ref.label is not None:
            labels = numeric_column(params.KIND, dataset, ref.dataset,
                                    ref.label).astype(np.float64)
        ctx = MpcContext(channel, parties, params.dealer, FRACTIONAL_BITS)
        provider = DealerProvider(channel, parties, params.dealer)
        counts = tuple(len(params.inputs[p].columns) for p in parties)
        bounds = tuple(b for p in parties for b in (params.inputs[p].bounds or ()))
        losses: list[np.ndarray] = []

        def after_epoch(epoch: int, w: SharedArray, x: np.ndarray, y: SharedArray) -> None:
            if params.losses:
                losses.append(taylor_loss(ctx, provider, x, y, w, params.feature_bound).share)
            context.report(epoch + 1, params.epochs)

        try:
            weights = train(ctx, provider, counts, bounds, params.label_holder, alignment.size,
                            params.schedule(), features, labels, context.rng, after_epoch)
            part, form = weights.share.ravel(), "shares"
            if params.model_to == "blocks":
                part, form = self._blocks(ctx, provider, params, parties, counts, weights), \
                    "blocks"
            outcome = JobOutcome(rows_used=alignment.size)
            outcome.openings = [{"what": o.what, "to": list(o.to), "values": o.values}
                                for o in ctx.record.openings]
            if losses:
                release(ctx, context, SharedArray(np.concatenate(losses), 0.0, FRACTIONAL_BITS,
                                                  ctx.is_leader), params.recipient, outcome)
        finally:
            provider.close()
        context.models.save(make_model(
            name, params.KIND, context.spec.job_id, context.requester, parties,
            {p: list(params.inputs[p].columns) for p in parties}, params.label_holder, form,
            FRACTIONAL_BITS, part))
        outcome.output = {"model": name, "openings": outcome.openings}
        return outcome

    @staticmethod
    def _blocks(ctx: MpcContext, provider: DealerProvider, params: VerticalLrParams,
                parties: tuple[str, ...], counts: tuple[int, ...], weights: SharedArray,
                ) -> np.ndarray:
        """Open each party's weights to it (the intercept to the label holder)."""
        mine = np.zeros(0)
        start = 0
        for party, count in zip(parties, counts, strict=True):
            rows = list(range(start, start + count))
            if party == params.label_holder:
                rows.append(weights.shape[0] - 1)
            block = SharedArray(np.ascontiguousarray(weights.share[rows]), weights.bound,
                                FRACTIONAL_BITS, ctx.is_leader)
            opened = reveal(ctx, block, party, "model block")
            if opened is not None:
                mine = decode(opened.ravel(), FRACTIONAL_BITS)
            start += count
        return mine

    def finish(self, params: VerticalLrParams, job: JobResult) -> VerticalLrResult:
        names = {job.outputs[p].get("model") for p in params.computing(job.parties)}
        if len(names) != 1:
            raise ProtocolError("vertical_lr: the parties report different models")
        losses: list[float] = []
        if params.losses:
            opened = opened_outputs(job, params.computing(job.parties), params.recipient,
                                    params.epochs)
            losses = decode(opened, FRACTIONAL_BITS).tolist()
        return VerticalLrResult(job, str(names.pop()), losses)
