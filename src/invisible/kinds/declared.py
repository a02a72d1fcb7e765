"""Jobs on shares with a dealer: who takes part (:class:`WithDealer`), how the parties
release the declared outputs and how the coordinator reads them back.

Either each computing party releases its share of the outputs to the
requester (uniformly random on its own; the requester adds them up), or
the outputs are opened to a recipient party, which releases the values to
the requester too. Every opening (what, to whom, how many values) goes into
each party's job output and signed ledger entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ConfigError, ProtocolError
from invisible.jobspec import JobResult
from invisible.kinds.alignments import ALIGNMENT_PREFIX, Alignment
from invisible.kinds.base import (
    OUT_OF_BOUND_RULE,
    Datasets,
    DeclaredUse,
    JobContext,
    JobOutcome,
    refuse_alike,
)
from invisible.kinds.secure_sum import numeric_column
from invisible.metering.entries import canonical_json
from invisible.protocols.mpc.arithmetic import reveal
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.dealer import run_dealer
from invisible.protocols.mpc.shared import SharedArray


class WithDealer:
    """Mixed into the parameters of a kind computed on shares with a dealer: the input
    parties compute, a dealer node serves correlated randomness, outputs go to the requester
    or to a recipient among the input parties."""

    KIND: ClassVar[str]
    inputs: Mapping[str, Any]
    dealer: str
    recipient: str | None

    def job_parties(self, available: tuple[str, ...]) -> tuple[str, ...]:
        return (*self.inputs, self.dealer)

    def computing(self, parties: tuple[str, ...]) -> tuple[str, ...]:
        """The computing parties in the job's order (the dealer is not one)."""
        return tuple(p for p in parties if p != self.dealer)

    def declared_use(self, party_id: str, columns: Callable[[Any], tuple[str, ...]],
                     ) -> DeclaredUse | None:
        """What the job uses at `party_id`: the dataset of its input and `columns(input)`
        (None at the dealer, which touches no data). With a recipient party, the values are
        opened to it and it releases them to the requester too: both receive them, so the
        policy must allow both."""
        if party_id == self.dealer:
            return None
        ref = self.inputs[party_id]
        return DeclaredUse(ref.dataset, columns(ref), self.recipient,
                           requester_too=self.recipient is not None)

    def serve_as_dealer(self, context: JobContext) -> JobOutcome | None:
        """At the dealer: serve the computing parties' tuple requests until they are done
        (its whole part of the job); elsewhere None."""
        if context.channel.party_id != self.dealer:
            return None
        served = run_dealer(context.channel, self.computing(context.spec.parties), context.rng)
        return JobOutcome(output={"tuples_served": served})

    def check_parties(self, parties: tuple[str, ...], inputs_rule: str) -> None:
        """At least two input parties (else `inputs_rule`, the error), a dealer that is not
        one, the job's parties exactly those, and a recipient among the input parties."""
        kind = self.KIND
        if len(self.inputs) < 2:
            raise ConfigError(f"{kind}: 'inputs' must {inputs_rule}")
        if self.dealer in self.inputs:
            raise ConfigError(f"{kind}: 'dealer' must name a dealer that is not an input party")
        if set(parties) != {*self.inputs, self.dealer} or len(parties) != len(self.inputs) + 1:
            raise ConfigError(f"{kind}: the job's parties must be the input parties and the "
                              "dealer")
        if self.recipient is not None and self.recipient not in self.inputs:
            raise ConfigError(f"{kind}: 'recipient' must be an input party or none")


#: The released array: a party's share of the outputs, or the recipient's opened values.
SHARES_ARRAY = "output_shares"


def release(ctx: MpcContext, context: JobContext, outputs: SharedArray,
            recipient: str | None, outcome: JobOutcome) -> None:
    """Release this party's part of the declared `outputs` into `outcome`."""
    size = int(outputs.share.size)
    if recipient is None:  # each party releases a uniformly random share
        ctx.record.add("declared-outputs (shares)", (context.requester,), size)
        outcome.arrays[SHARES_ARRAY] = outputs.share
    else:
        opened = reveal(ctx, outputs, recipient, "declared-outputs")
        if opened is not None:
            outcome.arrays[SHARES_ARRAY] = opened  # the recipient releases the values
    outcome.values_opened = size
    outcome.openings = ctx.record.listed()


def opened_outputs(job: JobResult, parties: Sequence[str], recipient: str | None,
                   size: int) -> np.ndarray:
    """At the coordinator: the opened outputs (ring elements) from what the parties released."""
    released = {p: job.arrays[p][SHARES_ARRAY] for p in parties
                if SHARES_ARRAY in job.arrays.get(p, {})}
    if recipient is not None:
        opened = released.get(recipient)
    elif set(released) == set(parties):
        opened = np.asarray(np.sum(list(released.values()), axis=0, dtype=RING_DTYPE))
    else:
        opened = None
    if opened is None or opened.dtype != RING_DTYPE or opened.shape != (size,):
        raise ProtocolError("a party released no shares of the declared outputs")
    return np.asarray(opened)


#: The step of the alignment check (see `aligned_rows`).
AGREE_STEP = "vertical/alignment"


def aligned_rows(context: JobContext, dataset: str, parties: Sequence[str]) -> Alignment:
    """This party's alignment ("@name"), made with every computing party of the job, after
    every computing party checked that all name the rows of one intersection: each sends the
    others a 32-byte hash of (psi job, rows), and they must all be equal (a party naming
    another alignment would pair its rows with other people's)."""
    if context.alignments is None:
        raise ConfigError("this node keeps no alignments")
    alignment = context.alignments.get(dataset.removeprefix(ALIGNMENT_PREFIX))
    missing = [p for p in parties if p not in alignment.parties]
    if missing:
        raise ConfigError(f"alignment '{alignment.name}' at party '{context.channel.party_id}' "
                          f"holds no rows in common with {', '.join(map(repr, missing))}")
    agree(context, parties, AGREE_STEP, {"job": alignment.job_id, "rows": alignment.size},
          "the parties' alignments are not the rows of one intersection (another psi job, "
          "or other rows)")
    return alignment


def agree(context: JobContext, parties: Sequence[str], step: str, facts: dict[str, Any],
          mismatch: str) -> None:
    """Every one of `parties` checks that all hold the same `facts` (public among them):
    each sends the others a 32-byte hash of them; any difference raises `mismatch` at
    every party alike."""
    digest = hashlib.sha256(canonical_json(facts)).digest()
    peers = [p for p in parties if p != context.channel.party_id]
    context.channel.send_to_each(step, {p: digest for p in peers})
    if any(context.channel.recv_bytes(p, step, len(digest)) != digest for p in peers):
        raise ProtocolError(mismatch)


def numeric_matrix(context: JobContext, kind: str, dataset_id: str, columns: Sequence[str],
                   ) -> np.ndarray:
    """This party's numeric `columns` of `dataset_id` as one float matrix (rows, columns)."""
    dataset = context.datasets.get(dataset_id)
    return np.column_stack([numeric_column(kind, dataset, dataset_id, c)
                            for c in columns]).astype(np.float64)


def bounded_columns(context: JobContext, kind: str, dataset_id: str, columns: Sequence[str],
                    bounds: Sequence[float] | None, parties: Sequence[str],
                    scaling: np.ndarray | None = None) -> np.ndarray:
    """This party's numeric `columns` of `dataset_id` as one float matrix (standardised as
    (value - scaling[0]) / scaling[1] when given), after the job was refused at every party
    alike if any value lies beyond its column's public bound (never clipped: clipping to a
    requester's bound can single one person out)."""
    values = standardised(numeric_matrix(context, kind, dataset_id, columns), scaling)
    return within_bounds(context, kind, values, bounds, parties)


def standardised(values: np.ndarray, scaling: np.ndarray | None) -> np.ndarray:
    """(value - scaling[0]) / scaling[1] per column, or the values as they are."""
    return values if scaling is None else (values - scaling[0]) / scaling[1]


def within_bounds(context: JobContext, kind: str, values: np.ndarray,
                  bounds: Sequence[float] | None, parties: Sequence[str]) -> np.ndarray:
    """`values`, after the job was refused at every party alike if any lies beyond its
    column's public bound (see `bounded_columns`)."""
    if bounds is not None:
        beyond = bool((np.abs(values) > np.asarray(bounds)).any())
        refuse_alike(context, parties, beyond, OUT_OF_BOUND_RULE,
                     f"a value lies beyond the job's declared bound at one or more parties "
                     f"({kind} refuses such values; it never clips them)", tag="/bounds")
    return values


def column_rows(kind: str, datasets: Datasets, dataset_id: str, columns: Sequence[str]) -> int:
    """The rows of `dataset_id`, checking that every one of `columns` is numeric (its
    declaration, never its values)."""
    dataset = datasets.get(dataset_id)
    rows = 0
    for name in columns:
        rows = int(numeric_column(kind, dataset, dataset_id, name).shape[0])
    return rows
