"""What each party learns in vertical logistic regression, checked on the wire.

The whole pipeline (inputs, training with the loss of every epoch, scores,
and the metrics of an evaluation) runs with three parties and a dealer over
the in-process channel, with every message recorded. Every message must be
of a known kind; each opening (the sum of what the parties send for one
step) must be uniformly distributed (a masked value) or a declared output
going to its declared recipient only. A share is uniform on its own, so the
check is on the opened sums, never on one party's message.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

import numpy as np
from test_mpc import F, inprocess_engine
from test_vertical_lr import breast

from invisible.crypto.prg import Prg
from invisible.crypto.sharing import RING_DTYPE
from invisible.net.inprocess import InProcessChannel
from invisible.protocols.mpc.arithmetic import reveal
from invisible.protocols.mpc.evaluation import input_labels, metrics
from invisible.protocols.mpc.logistic import Schedule, shared_scores, taylor_loss, train
from invisible.protocols.mpc.shared import SharedArray

#: Openings of masked values, and the bits each one's opened value is uniform on.
MASKED_BITS = {"beaver-differences": 64, "masked-truncation-input": 64,
               "masked-comparison-input": 64, "masked-bucket-input": 64,
               # the bin's two digits: mod 2^6 and 2^7 (2K = 2^13, K = 4096 bins per class)
               "masked-bucket-low": 6, "masked-bucket-high": 7}
DECLARED = "declared-outputs"
STEP = re.compile(r"mpc/(\d+)/(open|input|reveal)/(.+)")


def record(monkeypatch):
    sent = []
    original = InProcessChannel._send

    def _send(self, to, step, payload, handover):
        copy = payload.copy() if isinstance(payload, np.ndarray) else bytes(payload)
        sent.append((self.party_id, to, step, copy))
        return original(self, to, step, payload, handover)

    monkeypatch.setattr(InProcessChannel, "_send", _send)
    return sent


def pipeline(ctx, provider):
    joined, guest, host = breast()
    blocks = [joined[guest].to_numpy(), joined[host[:10]].to_numpy(),
              joined[host[10:]].to_numpy()]
    labels = joined["y"].to_numpy(float)
    counts = tuple(b.shape[1] for b in blocks)
    rows, rng, holder = labels.size, Prg.from_os(), "p1"
    mine = labels if ctx.me == holder else None
    seen = {}

    def on_epoch(epoch, w, x, y):
        seen["x"] = x
        seen.setdefault("losses", []).append(taylor_loss(ctx, provider, x, y, w, 20.0).share)

    w = train(ctx, provider, counts, (20.0,) * sum(counts), holder, rows,
              Schedule(epochs=2, batch_size=64, learning_rate=0.1, l2=0.01, seed=3),
              blocks[ctx.index], mine, rng, on_epoch)
    scores = shared_scores(ctx, provider, seen["x"], 20.0, w.share.ravel(), 8.0)
    y = input_labels(ctx, holder, mine, rows, rng)
    values = metrics(ctx, provider, scores, y, holder, mine, 0.5, 4096, rng)
    out = SharedArray(np.concatenate([*seen["losses"], values.share]), 1e3, F, ctx.is_leader)
    return reveal(ctx, out, "p0", DECLARED)


def test_every_opening_is_a_masked_value_or_a_declared_output(monkeypatch):
    sent = record(monkeypatch)
    engine = inprocess_engine(3)
    engine.run(pipeline)
    parties = set(engine.parties)
    opened = defaultdict(dict)  # step -> sender -> payload, for the computing parties' opens
    kinds = defaultdict(int)
    for sender, to, step, payload in sent:
        if sender == "dealer":  # seeds and the receiver's shares of dependent components
            assert to in parties and (step == "dealer/seed" or step.startswith("dealer/tuple/"))
            kinds["dealer"] += 1
            continue
        if to == "dealer":  # the leader's requests: a kind, an id, shapes, f; nothing else
            request = json.loads(payload)
            assert sender == "p0" and set(request) <= {"kind", "id", "shapes", "f"}
            kinds["request"] += 1
            continue
        found = STEP.fullmatch(step)
        assert found, f"an unexpected message between parties: {step}"
        what, name = found.group(2), found.group(3)
        if what == "input":  # a 32-byte seed from the owner of the input
            assert len(payload) == 32 and sender == name
        elif what == "reveal":
            assert name == DECLARED and to == "p0"
        else:
            assert name in MASKED_BITS, f"an opening of {name}"
            opened[(step, name)][sender] = payload
        kinds[what] += 1
    assert kinds["open"] > 1000 and kinds["reveal"] == 2 and kinds["input"] == 2 * 6
    pooled = defaultdict(list)
    for (_step, name), by_sender in opened.items():
        assert set(by_sender) == parties  # every party sent its share of the opening
        total = np.sum(np.stack(list(by_sender.values())), axis=0, dtype=RING_DTYPE)
        pooled[name].append(total.ravel())
    for name, bits in MASKED_BITS.items():
        values = np.concatenate(pooled[name])
        if bits < 64:
            values = values & np.uint64((1 << bits) - 1)
        frequency = np.array([((values >> np.uint64(b)) & np.uint64(1)).mean()
                              for b in range(bits)])
        # Each bit of a uniform value is 1 with probability 1/2: within 6 standard errors.
        assert np.abs(frequency - 0.5).max() < 6 * 0.5 / np.sqrt(values.size), name
