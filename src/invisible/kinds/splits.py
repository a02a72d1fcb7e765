"""Train and test rows of an alignment, chosen by the label holder: a stratified split by
label with a public seed, so a model is evaluated on rows it was not trained on.

Only the label holder knows the labels, so only it can stratify:

1. It draws the test rows: ceil(fraction N) of the N aligned rows (a count
   that depends on N alone, never on the labels), each class getting its
   share by largest remainder, the rows of a class drawn uniformly from a
   generator seeded by the seed and the alignment's psi job (the same split
   for a training job and a later evaluation on the same alignment).
2. It sends their positions to the other computing parties, which check
   them (sorted, distinct, in range, as many as expected).

What the other parties learn: which rows are test rows. Each row is one
with probability about `fraction` whatever its label; the only dependence
on the labels is that each class contributes its rounded share.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

from invisible.errors import ProtocolError
from invisible.kinds.alignments import Alignment
from invisible.kinds.base import JobContext

STEP = "vertical/split"


def held_out_count(rows: int, fraction: float) -> int:
    """How many of `rows` rows are test rows (public: depends on the count alone)."""
    return min(rows, math.ceil(fraction * rows)) if fraction > 0 else 0


def stratified_test_rows(labels: np.ndarray, fraction: float, seed: bytes) -> np.ndarray:
    """Step 1: the sorted positions of the test rows."""
    total = held_out_count(labels.size, fraction)
    classes, counts = np.unique(labels, return_counts=True)
    ideal = total * counts / labels.size
    share = np.floor(ideal).astype(np.int64)
    order = np.argsort(-(ideal - share), kind="stable")  # largest remainder first
    share[order[:total - int(share.sum())]] += 1
    generator = np.random.default_rng(int.from_bytes(seed[:16], "big"))
    chosen = [generator.permutation(np.flatnonzero(labels == c))[:k]
              for c, k in zip(classes, share, strict=True)]
    return np.sort(np.concatenate([np.zeros(0, np.int64), *chosen]))


def split_seed(seed: int, alignment: Alignment) -> bytes:
    return hashlib.sha256(f"vertical-split/{seed}/{alignment.job_id}".encode()).digest()


def chosen_rows(context: JobContext, parties: Sequence[str], holder: str,
                labels: np.ndarray | None, alignment: Alignment, fraction: float, seed: int,
                part: str) -> np.ndarray:
    """The positions (into the alignment) of the `part` ("train" or "test") rows, the same
    at every computing party: steps 1-2. With fraction 0, every row."""
    rows = alignment.size
    if fraction == 0:
        return np.arange(rows)
    count = held_out_count(rows, fraction)
    me = context.channel.party_id
    if me == holder:
        if labels is None:
            raise ProtocolError("the label holder splits by its labels")
        test = stratified_test_rows(labels, fraction, split_seed(seed, alignment))
        context.channel.send_to_each(STEP, {p: test for p in parties if p != me})
    else:
        test = context.channel.recv_array(holder, STEP, np.int64, (count,))
        if count and (test[0] < 0 or test[-1] >= rows or (np.diff(test) <= 0).any()):
            raise ProtocolError(f"party '{holder}' sent test rows that are not sorted, "
                                "distinct positions of the alignment")
    if part == "test":
        return np.asarray(test)
    keep = np.ones(rows, bool)
    keep[test] = False
    return np.flatnonzero(keep)
