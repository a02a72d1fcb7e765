"""The `horizontal_lr` job kind: logistic regression by federated averaging, each round
combined by a secure sum.

Several parties hold the same features and a 0/1 label about different
people. Each round every party trains locally from the global model and
the parties combine their row-weighted updates with a secure sum
(:mod:`invisible.protocols.fedavg`), so each learns only the weighted
average, which it needs for the next round. The requester receives the
final model (``model_to = "requester"``, the default; or it stays with the
parties, in each one's results folder), the weighted training loss of every
round's model, and per round the seconds and bytes of each party.

Privacy rules:

- at least three parties: with two, the combined update gives each party the
  other's (by subtraction); such a job is refused unless every policy says
  ``two_party = true``;
- k counts the rows behind an update: each step's gradient averages one
  mini-batch, so the smallest released cell is min(rows, batch_size) (a
  batch smaller than k is refused; a vector whose elements are single rows,
  as an elementwise `secure_sum`, still is too), and learning_rate x l2 is
  at most 0.5, so no step erases the earlier ones (at 1 the update would be
  the last batch alone);
- a dataset is combined with one group of parties: the first job's, as the
  ledger records it, or the policy's ``group``. With 4 parties, the models
  of the 4 three-party jobs gave each party's own update by differencing
  (the rule against two parties, gone round);
- every update is clipped to the declared L2 norm `clip` before it is
  encoded; a non-finite update or loss refuses the job at every party alike
  (one bit), releasing nothing of that round;
- the label must be 0 or 1 (a data check, charged, that gives no count);
- with bounds on the features (standardisation), a value beyond its bound
  refuses the job at every party alike: this kind never clips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from invisible.crypto.fixedpoint import BoundError
from invisible.errors import ConfigError, ProtocolError
from invisible.jobspec import JobResult
from invisible.kinds.base import (
    Datasets,
    DataUse,
    DeclaredUse,
    JobContext,
    JobKind,
    JobOutcome,
    refuse_alike,
)
from invisible.kinds.declared import bounded_columns
from invisible.kinds.params import ColumnInputs, Params, param
from invisible.kinds.results import Result, Table
from invisible.kinds.secure_sum import MAX_ROWS, numeric_column
from invisible.protocols.fedavg import (
    Schedule,
    check_capacity,
    fedavg,
    moment_bits,
    probabilities,
)

if TYPE_CHECKING:
    import pandas

FRACTIONAL_BITS = 24
#: The most a step may shrink the weights by (learning_rate x l2).
MAX_DECAY = 0.5
MODEL_ARRAY = "model"
LOSSES_ARRAY = "losses"
NON_FINITE_RULE = "non-finite"


@dataclass(frozen=True, kw_only=True)
class HorizontalLrParams(Params["HorizontalLrResult"]):
    KIND: ClassVar[str] = "horizontal_lr"

    inputs: ColumnInputs = param(
        "per party, the dataset, its feature columns (the same number at every party, in the "
        "same order) and its 0/1 label column; with public bounds on the features (the same "
        "at every party), they are standardised by their pooled means and deviations",
        example={"bank": {"dataset": "customers", "columns": ["monthly_spend", "district"],
                          "bounds": [5000.0, 7.0], "label": "late_payment"}})
    rounds: int = param("rounds of federated averaging", default=10, ge=1, le=1000)
    local_epochs: int = param("local epochs per round", default=1, ge=1, le=100)
    batch_size: int = param("rows per local mini-batch", default=1024, ge=1, le=1_000_000)
    learning_rate: float = param("step size of local gradient descent", default=0.1, gt=0,
                                 le=100)
    l2: float = param("L2 penalty on the weights (not the intercept)", default=0.0, ge=0,
                      le=100)
    clip: float = param("public bound on the L2 norm of each party's update per round (a "
                        "longer update is scaled down to it)", default=10.0, gt=0, le=1e6)
    seed: int = param("seed of the local batch orders", default=0, ge=0, lt=2**63)
    max_rows: int = param("public bound on each party's rows", default=100_000, ge=1,
                          le=MAX_ROWS)
    model_to: str = param("who receives the final model: the requester, or the parties "
                          "(each keeps it in its results folder)", default="requester",
                          choices=("requester", "parties"))

    def check(self, parties: tuple[str, ...]) -> None:
        kind = self.KIND
        if set(self.inputs) != set(parties):
            raise ConfigError(f"{kind}: 'inputs' must name a dataset, features and label for "
                              f"every party of the job ({', '.join(parties)}) and no other")
        if len(parties) < 2:
            raise ConfigError(f"{kind} needs at least two parties (three unless every policy "
                              "says two_party = true)")
        widths = {len(ref.columns) for ref in self.inputs.values()}
        if len(widths) != 1:
            raise ConfigError(f"{kind}: every party must give the same number of features")
        for party, ref in self.inputs.items():
            if ref.label is None:
                raise ConfigError(f"{kind}: party '{party}' must give a label")
            if ref.label in ref.columns:
                raise ConfigError(f"{kind}: party '{party}': the label is not a feature")
        if self.learning_rate * self.l2 > MAX_DECAY:
            raise ConfigError(f"{kind}: learning_rate x l2 must be at most {MAX_DECAY}: a step "
                              "shrinks the weights by that factor, and a larger one would let "
                              "the last rows of an epoch outweigh all the others")
        if len({ref.bounds for ref in self.inputs.values()}) != 1:
            raise ConfigError(f"{kind}: the features' bounds (which ask for standardisation) "
                              "must be the same at every party, or given by none")
        try:
            check_capacity(len(parties), self.max_rows, self.clip, FRACTIONAL_BITS)
        except BoundError as exc:
            raise ConfigError(f"{kind}: {exc}: lower 'max_rows' or 'clip'") from None
        if self.bounds is not None:
            try:
                moment_bits(len(parties), self.max_rows, self.bounds)
            except BoundError as exc:
                raise ConfigError(f"{kind}: {exc}: lower 'max_rows' or the bounds") from None

    @property
    def bounds(self) -> tuple[float, ...] | None:
        """The features' public bounds (the same at every party), if standardising."""
        return next(iter(self.inputs.values())).bounds

    def job_parties(self, available: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(self.inputs)

    def schedule(self) -> Schedule:
        return Schedule(self.rounds, self.local_epochs, self.batch_size, self.learning_rate,
                        self.l2, self.clip, self.seed)


@dataclass(repr=False, eq=False)
class HorizontalLrResult(Result):
    """The trained model (public to its recipient) and the training history."""

    features: list[str]
    #: d weights then the intercept; None if the model went to the parties.
    model: np.ndarray | None
    #: The weighted training loss of the model after each round (R values).
    losses: list[float]
    #: Per round, per party: seconds and bytes sent.
    per_round: list[dict[str, Any]] = field(default_factory=list)

    @property
    def coef(self) -> np.ndarray:
        return self._model()[:-1]

    @property
    def intercept(self) -> float:
        return float(self._model()[-1])

    def _model(self) -> np.ndarray:
        if self.model is None:
            raise ProtocolError("the model went to the parties, not to the requester")
        return self.model

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """P(y = 1) of each row of a local (rows, d) array."""
        return probabilities(np.asarray(features, dtype=np.float64), self._model())

    def history(self) -> pandas.DataFrame:
        """A row per round: the loss after it, its slowest party's seconds, bytes sent."""
        import pandas

        return pandas.DataFrame([{"round": r + 1, "loss": loss, **self.per_round[r]}
                                 for r, loss in enumerate(self.losses)])

    def table(self) -> Table:
        if self.model is None:
            return Table(("round", "loss"), [(r + 1, v) for r, v in enumerate(self.losses)])
        return Table(("feature", "weight"), [*zip(self.features, map(float, self.coef),
                                                  strict=True),
                                             ("(intercept)", self.intercept)], 6)

    def facts(self) -> dict[str, Any]:
        return {"model": None if self.model is None else self.model.tolist(),
                "losses": self.losses, "per_round": self.per_round}

    def notes(self) -> list[str]:
        notes = [f"{len(self.losses)} rounds; training loss {self.losses[0]:.5f} after the "
                 f"first, {self.losses[-1]:.5f} after the last"]
        if self.model is None:
            notes.append("the model went to the parties (each keeps it in its results folder)")
        return notes


class HorizontalLrKind(JobKind[HorizontalLrParams, HorizontalLrResult]):
    name = "horizontal_lr"
    params_type = HorizontalLrParams
    summary = ("logistic regression by federated averaging over parties holding the same "
               "columns about different people; each round combined by a secure sum")

    def declare(self, params: HorizontalLrParams, party_id: str) -> DeclaredUse:
        ref = params.inputs[party_id]
        assert ref.label is not None
        return DeclaredUse(ref.dataset, (*ref.columns, ref.label), None,
                           two_party=len(params.inputs) == 2, group=tuple(sorted(params.inputs)))

    def plan(self, params: HorizontalLrParams, party_id: str, datasets: Datasets) -> DataUse:
        ref = params.inputs[party_id]
        assert ref.label is not None
        dataset = datasets.get(ref.dataset)
        for name in ref.columns:
            numeric_column(params.KIND, dataset, ref.dataset, name)
        label = numeric_column(params.KIND, dataset, ref.dataset, ref.label)
        rows = int(label.shape[0])
        # A step's gradient averages one mini-batch: the smallest cell an update releases.
        cell = min(rows, params.batch_size)
        if rows > params.max_rows:
            return DataUse(rows, cell, f"dataset '{ref.dataset}' has more rows than the job's "
                                       "max_rows")
        if not np.isin(label, (0, 1)).all():
            return DataUse(rows, cell, f"the label column '{ref.label}' holds values other "
                                       "than 0 and 1")
        return DataUse(rows, cell)

    def run(self, params: HorizontalLrParams, context: JobContext) -> JobOutcome:
        me = context.channel.party_id
        ref = params.inputs[me]
        assert ref.label is not None
        parties = context.spec.parties
        bounds = params.bounds
        features = bounded_columns(context, params.KIND, ref.dataset, ref.columns, bounds,
                                   parties)
        labels = numeric_column(params.KIND, context.datasets.get(ref.dataset), ref.dataset,
                                ref.label).astype(np.float64)

        def check(flagged: bool, round_: int) -> None:
            refuse_alike(context, parties, flagged, NON_FINITE_RULE,
                         "a party's update or loss was not a finite number (lower the "
                         "learning rate)", tag=f"/fedavg/{round_}")

        training = fedavg(context.channel, features, labels, params.schedule(),
                          params.max_rows, FRACTIONAL_BITS, check,
                          lambda r, _: context.report(r + 1, params.rounds), bounds)
        d = features.shape[1]
        combined = params.rounds * (d + 3) + 2
        outcome = JobOutcome(rows_used=int(labels.size))
        outcome.arrays[LOSSES_ARRAY] = np.array(training.losses[1:])
        released = params.rounds
        if params.model_to == "requester":
            outcome.arrays[MODEL_ARRAY] = training.model
            released += d + 1
        else:
            context.results_dir.mkdir(parents=True, exist_ok=True)
            np.save(context.results_dir / f"{context.spec.job_id}-model.npy", training.model)
        outcome.values_opened = released
        if bounds is not None:
            combined += 2 * d + 1  # the pooled moments
        outcome.openings = [
            {"what": "round totals (weighted update, rows, loss)", "to": list(parties),
             "values": combined},
            {"what": "declared-outputs", "to": [context.requester], "values": released}]
        outcome.output = {"rounds": params.rounds, "openings": outcome.openings,
                          "per_round": [{"seconds": r.seconds, "bytes_sent": r.bytes_sent}
                                        for r in training.rounds]}
        outcome.notes = {"rounds": {"rounds": params.rounds,
                                    "bytes_sent": [r.bytes_sent for r in training.rounds]}}
        return outcome

    def finish(self, params: HorizontalLrParams, job: JobResult) -> HorizontalLrResult:
        parties = job.parties
        losses = _agreed(job, LOSSES_ARRAY, (params.rounds,))
        model = None
        if params.model_to == "requester":
            d = len(params.inputs[parties[0]].columns)
            model = _agreed(job, MODEL_ARRAY, (d + 1,))
        per_round = []
        for r in range(params.rounds):
            rounds = [job.outputs[p].get("per_round", [{}] * params.rounds)[r] for p in parties]
            per_round.append({"seconds": max(float(x.get("seconds", 0.0)) for x in rounds),
                              "bytes_sent": sum(int(x.get("bytes_sent", 0)) for x in rounds)})
        first = params.inputs[parties[0]]
        return HorizontalLrResult(job, list(first.columns), model,
                                  [float(v) for v in losses], per_round)


def _agreed(job: JobResult, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The array every party released under `name`: the same at each (they all computed it
    from the same sums)."""
    released = [job.arrays.get(p, {}).get(name) for p in job.parties]
    first = released[0]
    if first is None or first.shape != shape or any(
            r is None or not np.array_equal(first, r) for r in released[1:]):
        raise ProtocolError(f"horizontal_lr: the parties released different {name}s")
    return np.asarray(first, dtype=np.float64)
