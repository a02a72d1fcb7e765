"""Mini-batches that each hold at least a batch's worth of rows.

The k rule of the learning kinds counts a mini-batch (a step's gradient
averages one): a remainder smaller than the batch size, alone in the last
batch, would let a requester who knows the public order put one chosen row
there. It joins the batch before it instead.
"""

from __future__ import annotations

import numpy as np


def mini_batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive batches of `size` rows of `order`, the last one holding the remainder too:
    every batch has at least min(len(order), size) rows."""
    count = max(1, len(order) // size)
    return [order[i * size:(i + 1) * size] for i in range(count - 1)] + \
        [order[(count - 1) * size:]]
