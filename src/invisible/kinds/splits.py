"""Train and test rows of an alignment, chosen by the label holder: a stratified split by
label, so a model is evaluated on rows it was not trained on.

Only the label holder knows the labels, so only it can stratify:

1. It draws the test rows of each class c of n_c rows: floor(f n_c) of them,
   and one more with probability f n_c - floor(f n_c) (randomised rounding),
   uniformly among the class's rows. So every row is a test row with
   probability exactly f, whatever its label, and the test rows hold each
   class in proportion to within one row. The generator is seeded by the
   alignment's psi job and f alone: one split per alignment and fraction
   (a requester cannot draw the split again and again), the same for a
   training job and a later evaluation.
2. It sends their positions to the other computing parties, which check
   them (sorted, distinct, in range).

The fraction is one of `FRACTIONS` (a requester who could pick any would
find, from where the test rows change, which rows belong to a small class).

What the other parties learn: which rows are test rows, and so their count
(within one row per class of f N). No row's membership depends on its
label; what remains is the joint pattern of one draw (each class holds its
share), which for a class of very few rows is informative: jobs that use a
split apply the policy's k to the smallest class's rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from invisible.errors import ConfigError, ProtocolError
from invisible.kinds.alignments import Alignment
from invisible.kinds.base import JobContext

STEP = "vertical/split"
#: The fractions a job may hold out (0: none).
FRACTIONS = (0.0, 0.1, 0.2, 0.25, 0.3, 0.5)


def check_fraction(kind: str, fraction: float) -> None:
    if fraction not in FRACTIONS:
        raise ConfigError(f"{kind}: 'split' must be one of "
                          f"{', '.join(f'{f:g}' for f in FRACTIONS)}")


def rows_bounds(rows: int, fraction: float) -> tuple[int, int]:
    """Public bounds the split keeps: (fewest test rows, fewest training rows) of `rows`
    (randomised rounding adds at most one test row per class to floor(f n_c))."""
    if not fraction:
        return rows, rows
    held = int(np.floor(fraction * rows))
    return max(0, held - 1), max(0, rows - held - 2)


def smallest_class(labels: np.ndarray, fraction: float) -> int:
    """The fewest rows of one class among the scored rows: the test rows of a split (at
    least floor(f n_c) of class c), or every row (0 when a class is missing)."""
    counts = np.array([np.count_nonzero(labels == 0), np.count_nonzero(labels == 1)])
    return int((np.floor(fraction * counts) if fraction else counts).min())


def stratified_test_rows(labels: np.ndarray, fraction: float, seed: bytes) -> np.ndarray:
    """Step 1: the sorted positions of the test rows."""
    generator = np.random.default_rng(int.from_bytes(seed[:16], "big"))
    chosen = [np.zeros(0, np.int64)]
    for c in (0.0, 1.0):  # the labels are 0/1 (checked before a job runs)
        rows = np.flatnonzero(labels == c)
        share = fraction * rows.size
        count = int(np.floor(share)) + int(generator.random() < share - np.floor(share))
        chosen.append(generator.permutation(rows)[:count])
    return np.sort(np.concatenate(chosen))


def split_seed(fraction: float, alignment: Alignment) -> bytes:
    return hashlib.sha256(f"vertical-split/{fraction!r}/{alignment.job_id}".encode()).digest()


def chosen_rows(context: JobContext, parties: Sequence[str], holder: str,
                labels: np.ndarray | None, alignment: Alignment, fraction: float,
                part: str) -> np.ndarray:
    """The positions (into the alignment) of the `part` ("train" or "test") rows, the same
    at every computing party: steps 1-2. With fraction 0, every row."""
    rows = alignment.size
    if fraction == 0:
        return np.arange(rows)
    me = context.channel.party_id
    if me == holder:
        if labels is None:
            raise ProtocolError("the label holder splits by its labels")
        test = stratified_test_rows(labels, fraction, split_seed(fraction, alignment))
        context.channel.send_to_each(STEP, {p: test for p in parties if p != me})
    else:
        test = context.channel.recv_array(holder, STEP, np.int64)
        if test.ndim != 1 or test.size > rows or (test.size and (
                test[0] < 0 or test[-1] >= rows or (np.diff(test) <= 0).any())):
            raise ProtocolError(f"party '{holder}' sent test rows that are not sorted, "
                                "distinct positions of the alignment")
    if part == "test":
        return np.asarray(test)
    keep = np.ones(rows, bool)
    keep[test] = False
    return np.flatnonzero(keep)
