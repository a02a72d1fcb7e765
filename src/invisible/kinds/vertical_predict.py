"""The `vertical_predict` job kind: a kept `vertical_lr` model's scores on the rows of an
alignment (a later psi's), computed on shares; every row's score goes to one computing
party (the label holder, or another every policy allows), never to the requester.

Steps, at each computing party:

1. Its part of the model (its share of every weight, kept by the training
   job) is loaded; all parties check that their parts come from one
   training job (a 32-byte hash each) and that the job names the model's
   parties and columns in the model's order.
2. The alignment check of every kind over an alignment; the columns within
   their public bounds, or the job is refused at every party alike.
3. The features are input-shared (`logistic.share_features`) and the
   scores x w + b computed by one matrix product on shares.
4. The scores are opened to the recipient alone, which writes
   predictions/<job>.csv in its results: its own row numbers, the score and
   the probability 1 / (1 + e^-score).

What each party learns: masked openings only, and the recipient every
row's score. The requester learns where the scores went.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from invisible.crypto.fixedpoint import decode
from invisible.errors import ConfigError
from invisible.jobspec import JobResult
from invisible.kinds.alignments import ALIGNMENT_PREFIX, check_name
from invisible.kinds.base import Datasets, DataUse, DeclaredUse, JobContext, JobKind, JobOutcome
from invisible.kinds.declared import WithDealer, agree, aligned_rows, bounded_columns, column_rows
from invisible.kinds.models import Model
from invisible.kinds.params import ColumnInputs, Params, param
from invisible.kinds.results import Result, Table
from invisible.kinds.vertical_lr import FRACTIONAL_BITS
from invisible.protocols.mpc.arithmetic import reveal
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.logistic import share_features, shared_scores
from invisible.protocols.mpc.provider import DealerProvider
from invisible.protocols.mpc.shared import SharedArray

PREDICTIONS = "predictions"


class WithModel(WithDealer):
    """Mixed into the parameters of a kind that uses a kept vertical_lr model."""

    inputs: ColumnInputs
    model: str

    @property
    def feature_bound(self) -> float:
        return max(1.0, *(b for ref in self.inputs.values() for b in (ref.bounds or ())))

    def check_inputs(self, parties: tuple[str, ...], labels: int) -> None:
        """Parties as `check_parties`; every input an alignment with bounds; `labels` of
        them (0 or 1) name a label column."""
        self.check_parties(parties, "name columns at two or more parties")
        check_name(self.model)
        for party, ref in self.inputs.items():
            if not ref.dataset.startswith(ALIGNMENT_PREFIX) or ref.bounds is None:
                raise ConfigError(f"{self.KIND}: party '{party}' must name an alignment "
                                  "(\"@name\") and its columns with bounds")
        if sum(ref.label is not None for ref in self.inputs.values()) != labels:
            raise ConfigError(f"{self.KIND}: " + ("exactly one party names a label column"
                                                  if labels else "no party names a label"))


def kept_model(params: WithModel, context: JobContext, parties: tuple[str, ...]) -> Model:
    """Step 1: this party's part of the model, checked against the job and the others'."""
    if context.models is None:
        raise ConfigError("this node keeps no models")
    model = context.models.get(params.model, context.requester)
    if model.parties != parties or any(
            model.columns[p] != list(params.inputs[p].columns) for p in parties):
        raise ConfigError(f"{params.KIND}: model '{params.model}' was trained by parties "
                          f"{', '.join(model.parties)} on other columns or in another order")
    if model.form != "shares":
        raise ConfigError(f"model '{model.name}' is not kept as shares")
    agree(context, parties, "vertical/model", {"job": model.job_id, "name": model.name},
          f"the parties' parts of model '{params.model}' come from different training jobs")
    return model


def model_scores(ctx: MpcContext, provider: DealerProvider, params: WithModel, model: Model,
                 features: np.ndarray, context: JobContext) -> SharedArray:
    """Step 3: shares of every row's score."""
    counts = tuple(len(params.inputs[p].columns) for p in ctx.parties)
    x = share_features(ctx, counts, params.feature_bound, features, features.shape[0],
                       context.rng)
    return shared_scores(ctx, provider, x, params.feature_bound, model.part,
                         model.weight_bound)


@dataclass(frozen=True, kw_only=True)
class VerticalPredictParams(WithModel, Params["VerticalPredictResult"]):
    KIND: ClassVar[str] = "vertical_predict"

    inputs: ColumnInputs = param(
        "per computing party, the alignment (\"@name\") to score and the model's feature "
        "columns with their public bounds, as in training",
        example={"bank": {"dataset": "@common-customers", "columns": ["district"],
                          "bounds": [8.0]},
                 "hospital": {"dataset": "@common-customers", "columns": ["district"],
                              "bounds": [8.0]},
                 "telco": {"dataset": "@common-customers", "columns": ["district"],
                           "bounds": [8.0]}})
    model: str = param("the model the parties keep (a vertical_lr job's)", example="late-payments")
    dealer: str = param("a dealer node of the job", example="dealer")
    recipient: str | None = param("the computing party that receives every row's score (the "
                                  "label holder, or another every policy allows)",
                                  example="bank")

    def check(self, parties: tuple[str, ...]) -> None:
        self.check_inputs(parties, labels=0)
        if self.recipient is None:
            raise ConfigError(f"{self.KIND}: 'recipient' must name the party that receives the "
                              "scores")


@dataclass(repr=False, eq=False)
class VerticalPredictResult(Result):
    """Where the scores went (they never reach the requester)."""

    recipient: str
    rows: int | None

    def table(self) -> Table:
        return Table(("scores went to", "kept as"),
                     [(self.recipient, f"{PREDICTIONS}/{self.job_id}.csv in its results")])

    def facts(self) -> dict[str, Any]:
        return {"recipient": self.recipient}


class VerticalPredictKind(JobKind[VerticalPredictParams, VerticalPredictResult]):
    name = "vertical_predict"
    bounds_values = True
    params_type = VerticalPredictParams
    summary = ("scores of a vertical_lr model on the rows of an alignment, computed on shares; "
               "every row's score goes to one party only (the label holder)")

    def declare(self, params: VerticalPredictParams, party_id: str) -> DeclaredUse | None:
        return params.declared_use(party_id, lambda ref: ref.columns)

    def plan(self, params: VerticalPredictParams, party_id: str, datasets: Datasets,
             ) -> DataUse | None:
        if party_id == params.dealer:
            return None
        ref = params.inputs[party_id]
        rows = column_rows(params.KIND, datasets, ref.dataset, ref.columns)
        # A score per row goes to one computing party, never to the requester: no aggregate
        # is released, and each policy's `recipients` must name that party (see declare).
        return DataUse(rows, None)

    def run(self, params: VerticalPredictParams, context: JobContext) -> JobOutcome:
        served = params.serve_as_dealer(context)
        if served is not None:
            return served
        parties = params.computing(context.spec.parties)
        ref = params.inputs[context.channel.party_id]
        assert ref.bounds is not None and params.recipient is not None
        model = kept_model(params, context, parties)
        alignment = aligned_rows(context, ref.dataset, parties)
        features = bounded_columns(context, params.KIND, ref.dataset, ref.columns, ref.bounds,
                                   parties, model.scaling)
        ctx = MpcContext(context.channel, parties, params.dealer, FRACTIONAL_BITS)
        provider = DealerProvider(context.channel, parties, params.dealer)
        try:
            scores = model_scores(ctx, provider, params, model, features, context)
            opened = reveal(ctx, scores, params.recipient, "declared-outputs (scores)")
        finally:
            provider.close()
        outcome = JobOutcome(rows_used=alignment.size, recipient=params.recipient)
        if opened is not None:
            values = decode(opened.ravel(), FRACTIONAL_BITS)
            folder = context.results_dir / PREDICTIONS
            folder.mkdir(parents=True, exist_ok=True)
            pd_rows = np.column_stack([alignment.rows, values, 0.5 * (1 + np.tanh(values / 2))])
            np.savetxt(folder / f"{context.spec.job_id}.csv", pd_rows, delimiter=",",
                       header="row,score,probability", comments="", fmt=["%d", "%.6f", "%.6f"])
        outcome.values_opened = alignment.size
        outcome.openings = ctx.record.listed()
        return outcome

    def finish(self, params: VerticalPredictParams, job: JobResult) -> VerticalPredictResult:
        assert params.recipient is not None
        return VerticalPredictResult(job, params.recipient, None)
