"""The `vertical_evaluate` job kind: how good a kept `vertical_lr` model is on the rows of
an alignment, as aggregate metrics only: AUC (with its error bound), accuracy at a
threshold and log loss, computed on shares.

Steps, at each computing party:

1. The model and the alignment are checked as in `vertical_predict`
   (steps 1-2 there); the label holder names its 0/1 label column.
2. With `split` > 0, the label holder draws the test rows, stratified by
   label (:mod:`.splits`): the rows a `vertical_lr` job with the same
   split held out. Otherwise every row is scored.
3. The scores of those rows on shares (`vertical_predict.model_scores`);
   the label holder input-shares the labels as integers.
4. :func:`invisible.protocols.mpc.evaluation.metrics`: a secret histogram
   of the scores in `bins` bins per class gives the AUC (pairs in one bin
   count a half; the bound on that error is released with it), plus
   accuracy and log loss, all on shares.
5. The four values are released to the requester (each party a share) or
   opened to a recipient party.

What each party learns: masked openings only, and the feature holders which
rows are test rows; the requester (or the recipient) the four aggregates.
No score, label or count per bin is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from invisible.crypto.fixedpoint import decode
from invisible.errors import ConfigError, ProtocolError
from invisible.jobspec import JobResult
from invisible.kinds.base import Datasets, DataUse, DeclaredUse, JobContext, JobKind, JobOutcome
from invisible.kinds.declared import (
    aligned_rows,
    bounded_columns,
    column_rows,
    opened_outputs,
    release,
)
from invisible.kinds.params import ColumnInputs, Params, param
from invisible.kinds.results import Result, Table
from invisible.kinds.splits import check_fraction, chosen_rows, rows_bounds, smallest_class
from invisible.kinds.vertical_lr import (
    FRACTIONAL_BITS,
    MAX_WEIGHT_BOUND,
    not_binary,
    read_labels,
    with_label,
)
from invisible.kinds.vertical_predict import WithModel, kept_model, model_scores
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.evaluation import input_labels, metrics
from invisible.protocols.mpc.provider import DealerProvider
from invisible.protocols.mpc.shared import check_range

METRICS = ("auc", "auc_error_bound", "accuracy", "log_loss")


@dataclass(frozen=True, kw_only=True)
class VerticalEvaluateParams(WithModel, Params["VerticalEvaluateResult"]):
    KIND: ClassVar[str] = "vertical_evaluate"

    inputs: ColumnInputs = param(
        "per computing party, the alignment (\"@name\") and the model's feature columns with "
        "their public bounds, as in training; the label holder also names its 0/1 label",
        example={"bank": {"dataset": "@common-customers", "columns": ["district"],
                          "bounds": [8.0], "label": "late_payment"},
                 "hospital": {"dataset": "@common-customers", "columns": ["district"],
                              "bounds": [8.0]},
                 "telco": {"dataset": "@common-customers", "columns": ["district"],
                           "bounds": [8.0]}})
    model: str = param("the model the parties keep (a vertical_lr job's)", example="late-payments")
    dealer: str = param("a dealer node of the job", example="dealer")
    recipient: str | None = param("a computing party that receives the metrics (and releases "
                                  "them to the requester)", default=None)
    threshold: float = param("the probability at or above which a row counts as predicted 1 "
                             "(accuracy): one of 0.1, 0.2, ..., 0.9 (a free threshold, moved "
                             "from job to job, would find every row's score)", default=0.5,
                             gt=0, lt=1)
    bins: int = param("histogram bins per class over scores in [-8, 8) (a power of two; "
                      "finer bins, a smaller AUC error bound)", default=16384, ge=16, le=65536)
    split: float = param("score only the rows the label holder holds out, as the training "
                         "job's split (0, 0.1, 0.2, 0.25, 0.3 or 0.5); 0: every row",
                         default=0.0, ge=0, lt=1)

    def check(self, parties: tuple[str, ...]) -> None:
        self.check_inputs(parties, labels=1)
        if self.bins & (self.bins - 1):
            raise ConfigError(f"{self.KIND}: 'bins' must be a power of two")
        if round(self.threshold * 10) != self.threshold * 10:
            raise ConfigError(f"{self.KIND}: 'threshold' must be one of 0.1, 0.2, ..., 0.9")
        check_fraction(self.KIND, self.split)
        columns = sum(len(ref.columns) for ref in self.inputs.values())
        scores = (columns + 1) * self.feature_bound * MAX_WEIGHT_BOUND
        try:  # the comparisons and the log loss of step 4 at their widest
            check_range(4 * scores * 2.0**FRACTIONAL_BITS, FRACTIONAL_BITS, f"{self.KIND} scores")
        except ProtocolError as exc:
            raise ConfigError(f"{exc}: lower the bounds") from None

    @property
    def label_holder(self) -> str:
        return next(p for p, ref in self.inputs.items() if ref.label is not None)


@dataclass(repr=False, eq=False)
class VerticalEvaluateResult(Result):
    """The model's metrics on the scored rows."""

    model: str
    auc: float
    auc_error_bound: float
    accuracy: float
    log_loss: float
    threshold: float

    def table(self) -> Table:
        return Table(("metric", "value"), [
            ("AUC", self.auc), ("AUC error bound", self.auc_error_bound),
            (f"accuracy at {self.threshold:g}", self.accuracy), ("log loss", self.log_loss)], 5)

    def facts(self) -> dict[str, Any]:
        return {"model": self.model, "auc": self.auc, "auc_error_bound": self.auc_error_bound,
                "accuracy": self.accuracy, "log_loss": self.log_loss,
                "threshold": self.threshold}

    def notes(self) -> list[str]:
        return ["AUC from a histogram of the scores on shares: within the error bound of the "
                "exact AUC (pairs in one bin count a half), and within 2^-16 more",
                "log loss within 7e-4 of the exact one; accuracy within 2^-15"]


class VerticalEvaluateKind(JobKind[VerticalEvaluateParams, VerticalEvaluateResult]):
    name = "vertical_evaluate"
    bounds_values = True
    params_type = VerticalEvaluateParams
    summary = ("AUC, accuracy and log loss of a vertical_lr model on an alignment's (held-out) "
               "rows, computed on shares; only the four aggregates are released")

    def declare(self, params: VerticalEvaluateParams, party_id: str) -> DeclaredUse | None:
        return params.declared_use(party_id, with_label)

    def plan(self, params: VerticalEvaluateParams, party_id: str, datasets: Datasets,
             ) -> DataUse | None:
        if party_id == params.dealer:
            return None
        ref = params.inputs[party_id]
        rows = column_rows(params.KIND, datasets, ref.dataset, ref.columns)
        # Every metric aggregates all the scored rows; the label holder counts the smallest
        # class among them (an AUC over one positive is that person's rank).
        cell = rows_bounds(rows, params.split)[0]
        labels = read_labels(params.KIND, datasets, ref)
        problem = not_binary(labels, ref)
        if labels is not None and problem is None:
            cell = min(cell, smallest_class(labels, params.split))
            if cell == 0:
                problem = "the rows to score hold too few rows of one class"
        return DataUse(rows, cell, problem)

    def run(self, params: VerticalEvaluateParams, context: JobContext) -> JobOutcome:
        served = params.serve_as_dealer(context)
        if served is not None:
            return served
        parties = params.computing(context.spec.parties)
        me = context.channel.party_id
        ref = params.inputs[me]
        assert ref.bounds is not None
        model = kept_model(params, context, parties)
        alignment = aligned_rows(context, ref.dataset, parties)
        features = bounded_columns(context, params.KIND, ref.dataset, ref.columns, ref.bounds,
                                   parties, model.scaling)
        holder = params.label_holder
        labels = read_labels(params.KIND, context.datasets, ref)
        part = "test" if params.split else "all"
        rows = chosen_rows(context, parties, holder, labels, alignment, params.split, part)
        features = features[rows]
        labels = None if labels is None else labels[rows]
        ctx = MpcContext(context.channel, parties, params.dealer, FRACTIONAL_BITS)
        provider = DealerProvider(context.channel, parties, params.dealer)
        outcome = JobOutcome(rows_used=alignment.size)  # every row is read and checked
        try:
            scores = model_scores(ctx, provider, params, model, features, context)
            y = input_labels(ctx, holder, labels, int(rows.size), context.rng)
            values = metrics(ctx, provider, scores, y, holder, labels, params.threshold,
                             params.bins, context.rng)
            release(ctx, context, values, params.recipient, outcome)
        finally:
            provider.close()
        outcome.output = {"model": model.name, "openings": outcome.openings}
        return outcome

    def finish(self, params: VerticalEvaluateParams, job: JobResult) -> VerticalEvaluateResult:
        opened = opened_outputs(job, params.computing(job.parties), params.recipient,
                                len(METRICS))
        auc, bound, accuracy, loss = decode(opened, FRACTIONAL_BITS).tolist()
        return VerticalEvaluateResult(job, params.model, auc, bound, accuracy, loss,
                                      params.threshold)
