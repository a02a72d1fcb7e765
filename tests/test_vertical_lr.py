"""Vertical logistic regression on shares (the protocol; the kind is later work).

Known answers against the same algorithm in float64 (train_plain: the same
batches and the same clipped-linear sigmoid) on FATE's vertical breast
split, over in-process channels and gRPC; every opening is a masked value.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from test_mpc import grpc_engine, inprocess_engine  # noqa: F401  (grpc_engine: a fixture)

from invisible.crypto.fixedpoint import decode
from invisible.crypto.prg import Prg
from invisible.crypto.sharing import reconstruct
from invisible.errors import ConfigError
from invisible.protocols.mpc.logistic import (
    SIGMOID_MAX_ERROR,
    Schedule,
    sigmoid_max_error,
    sigmoid_t1,
    train,
    train_plain,
)

DATA = Path(__file__).parent / "data"
MASKED = {"beaver-differences", "masked-truncation-input", "masked-comparison-input"}


def breast():
    tables = [pd.read_csv(io.BytesIO(gzip.decompress(
        (DATA / f"breast_hetero_{side}.csv.gz").read_bytes()))) for side in ("guest", "host")]
    renamed = [t.rename(columns={c: f"{c}_{side}" for c in t.columns if c.startswith("x")})
               for t, side in zip(tables, ("g", "h"), strict=True)]
    joined = renamed[0].merge(renamed[1], on="id")
    guest = [c for c in joined.columns if c.endswith("_g")]
    host = [c for c in joined.columns if c.endswith("_h")]
    assert (len(guest), len(host)) == (10, 20)  # every column of both sides
    return joined, guest, host


def run(engine, blocks, labels, schedule, holder="p0"):
    counts = tuple(b.shape[1] for b in blocks)
    bounds = tuple([20.0] * sum(counts))

    def program(ctx, provider):
        i = ctx.index
        return train(ctx, provider, counts, bounds, holder, labels.size, schedule, blocks[i],
                     labels if ctx.me == holder else None, Prg.from_os()).share

    results = engine.run(program)
    weights = decode(reconstruct(np.stack([results[p][0] for p in engine.parties])), 16)
    return weights.ravel(), results


@pytest.mark.parametrize("parties", [2, 3])
def test_weights_are_the_float64_algorithms_to_fixed_point(parties):
    joined, guest, host = breast()
    y = joined["y"].to_numpy(float)
    if parties == 2:
        blocks = [joined[guest].to_numpy(), joined[host].to_numpy()]
    else:  # a label holder and two feature holders: the host's columns split in two
        blocks = [joined[guest].to_numpy(), joined[host[:10]].to_numpy(),
                  joined[host[10:]].to_numpy()]
    schedule = Schedule(epochs=3, batch_size=64, learning_rate=0.1, l2=0.01, seed=5,
                        sigmoid_limit=2.0 if parties == 2 else 1.5)
    weights, results = run(inprocess_engine(parties), blocks, y, schedule)
    x = np.concatenate(blocks, axis=1)
    plain = train_plain(x, y, schedule)
    assert np.max(np.abs(weights - plain)) <= 1e-3
    assert roc_auc_score(y, x @ weights[:-1] + weights[-1]) > 0.98
    for party in inprocess_engine(parties).parties:  # nothing but masked values is opened
        assert set(results[party][1].summary()) <= MASKED


def test_over_grpc_too(grpc_engine):  # noqa: F811
    joined, guest, host = breast()
    y = joined["y"].to_numpy(float)
    blocks = [joined[guest].to_numpy(), joined[host[:10]].to_numpy(), joined[host[10:]].to_numpy()]
    schedule = Schedule(epochs=1, batch_size=128, learning_rate=0.1, l2=0.0, seed=1)
    weights, _ = run(grpc_engine, blocks, y, schedule, holder="p1")
    assert np.max(np.abs(weights - train_plain(np.concatenate(blocks, axis=1), y, schedule))) \
        <= 1e-3


def test_the_sigmoid_is_clipped_linear_with_its_stated_largest_error():
    z = np.linspace(-80, 80, 160001)
    error = np.abs(sigmoid_t1(z) - 1 / (1 + np.exp(-z)))
    assert error.max() == pytest.approx(SIGMOID_MAX_ERROR, abs=1e-6)
    assert abs(z[np.argmax(error)]) == pytest.approx(2.0, abs=1e-3)
    assert sigmoid_t1(np.array([-72.8, 72.8])).tolist() == [0.0, 1.0]  # never NaN
    for limit in (0.5, 1.5, 2.0):  # the general clip, and its stated largest error
        error = np.abs(sigmoid_t1(z, limit) - 1 / (1 + np.exp(-z)))
        assert error.max() == pytest.approx(sigmoid_max_error(limit), abs=1e-6)


# --- the kind on party nodes ------------------------------------------------------------------

def test_psi_then_training_keeps_the_float64_model_as_shares_at_the_parties(tmp_path):
    from test_vertical_kind import columns_of, federation

    from invisible.coordinator.federation import Federation
    from invisible.coordinator.local import InProcessNodes
    from invisible.kinds.params import ColumnsRef
    from invisible.kinds.vertical_lr import VerticalLrParams

    layout, tables = federation(tmp_path, "breast")
    features = columns_of(tables)
    params = VerticalLrParams(
        inputs={"guest": ColumnsRef("@b", tuple(features["guest"]), (20.0,) * 10, "y"),
                "host": ColumnsRef("@b", tuple(features["host"]), (20.0,) * 20)},
        dealer="dealer", epochs=4, batch_size=64, learning_rate=0.1, l2=0.01, seed=3,
        model="breast-lr")
    seen = []
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        fed.psi({"guest": ("credit", "id"), "host": ("credit", "id")}, alignment="b")
        result = fed.run(params, progress=lambda done, total: seen.append((done, total)))
        aligned = {p: nodes.nodes[p].executor.alignments.get("b").rows for p in ("guest", "host")}
        for party in ("guest", "host"):  # the epochs are metered at every party
            [trained] = [e for e in nodes.nodes[party].ledger.entries()
                         if e.job_id == result.job_id and e.event == "trained"]
            assert (trained.body["epochs"], trained.body["model"]) == (4, "breast-lr")
    # The same algorithm in float64 on the joined rows, in the alignment's agreed order.
    frames = {p: pd.read_csv(tables[p][0]).iloc[aligned[p]] for p in ("guest", "host")}
    assert (frames["guest"]["id"].to_numpy() == frames["host"]["id"].to_numpy()).all()
    x = np.concatenate([frames["guest"][features["guest"]].to_numpy(),
                        frames["host"][features["host"]].to_numpy()], axis=1)
    y = frames["guest"]["y"].to_numpy(float)
    plain = train_plain(x, y, params.schedule())
    from invisible.kinds.models import ModelStore
    parts = [ModelStore(layout.party_configs[p].parent / f"{p}-results" / "models").get(
        "breast-lr", "coordinator") for p in ("guest", "host")]  # read after the nodes stopped: kept on disk
    assert {m.form for m in parts} == {"shares"} and parts[0].label_holder == "guest"
    with pytest.raises(ConfigError, match="unknown parameter"):  # no weights to any party
        VerticalLrParams.read({**params.to_json(), "model_to": "blocks"})
    weights = decode(reconstruct(np.stack([m.part for m in parts])), 16)
    assert np.max(np.abs(weights - plain)) <= 1e-3
    assert result.model == "breast-lr" and len(result.losses) == 4
    from dataclasses import replace

    from invisible.protocols.mpc.logistic import taylor_loss_plain
    for epoch, loss in enumerate(result.losses):  # each epoch's model, as float64 computes it
        model = train_plain(x, y, replace(params.schedule(), epochs=epoch + 1))
        assert abs(loss - taylor_loss_plain(x, y, model)) <= 1e-3
    assert seen and seen[-1][1] == 4


def test_a_kept_model_scores_a_new_alignment_for_the_label_holder_only(tmp_path):
    from test_vertical_kind import columns_of, federation

    from invisible.coordinator.federation import Federation
    from invisible.coordinator.local import InProcessNodes
    from invisible.kinds.params import ColumnsRef
    from invisible.kinds.vertical_lr import VerticalLrParams
    from invisible.kinds.vertical_predict import VerticalPredictParams

    layout, tables = federation(tmp_path, "breast")
    features = columns_of(tables)
    bounds = {"guest": (20.0,) * 10, "host": (20.0,) * 20}

    def inputs(alignment, label=True):
        return {p: ColumnsRef(alignment, tuple(features[p]), bounds[p],
                              "y" if label and p == "guest" else None) for p in features}

    ids = {"guest": ("credit", "id"), "host": ("credit", "id")}
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(ids, alignment="train")
        fed.run(VerticalLrParams(inputs=inputs("@train"), dealer="dealer", epochs=2,
                                 batch_size=64, model="m", losses=False))
        fed.psi(ids, alignment="later")
    with InProcessNodes(layout) as nodes, \
            Federation.from_config(layout.coordinator_config) as fed:  # after a restart
        result = fed.run(VerticalPredictParams(inputs=inputs("@later", label=False),
                                               model="m", dealer="dealer", recipient="guest"),
                         job_id="scores")
        later = nodes.nodes["guest"].executor.alignments.get("later").rows
    assert not result.job.arrays.get("guest") and not result.job.arrays.get("host")
    saved = pd.read_csv(layout.party_configs["guest"].parent / "guest-results" / "predictions"
                        / "scores.csv")
    assert saved["row"].tolist() == later.tolist()
    guest = pd.read_csv(tables["guest"][0])
    auc = roc_auc_score(guest["y"].to_numpy()[saved["row"]], saved["score"])
    assert auc > 0.98 and ((saved["probability"] > 0) & (saved["probability"] < 1)).all()
    assert not (layout.party_configs["host"].parent / "host-results" / "predictions").exists()


def test_the_node_lists_and_deletes_its_models(tmp_path, capsys):
    from invisible.cli import main
    from invisible.coordinator.local import write_local_federation
    from invisible.kinds.models import ModelStore, make_model

    layout = write_local_federation(tmp_path, ["a", "b"])
    config = layout.party_configs["a"]
    store = ModelStore(config.parent / "a-results" / "models")
    store.save(make_model("m1", "vertical_lr", "job-1", "coordinator", ("a", "b"),
                          {"a": ["x"], "b": ["y"]}, "a", "shares", 16, np.zeros(3, np.uint64), 8.0))
    with pytest.raises(Exception, match="a model named 'm1' exists"):
        store.save(make_model("m1", "vertical_lr", "job-2", "coordinator", ("a", "b"),
                              {"a": ["x"], "b": ["y"]}, "a", "shares", 16, np.ones(3), 8.0))
    assert main(["node", "models", "--config", str(config)]) == 0
    [header, row] = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["name", "kind", "form"]
    assert row.split()[:4] == ["m1", "vertical_lr", "shares", "a,b"]
    assert main(["node", "models", "--config", str(config), "--delete", "m1"]) == 2
    assert main(["node", "models", "--config", str(config), "--delete", "m1",
                 "--requester", "coordinator"]) == 0
    assert not store.exists("m1", "coordinator") and store.list() == []
    with pytest.raises(Exception, match="no model named 'm1'"):
        store.get("m1", "coordinator")


def test_the_vertical_estimator_fits_on_a_psi_result_and_scores_for_the_label_holder(
        tmp_path, capsys):
    from test_vertical_kind import columns_of, federation

    from invisible.api import VerticalLogisticRegression
    from invisible.coordinator.federation import Federation
    from invisible.coordinator.local import InProcessNodes

    layout, tables = federation(tmp_path, "breast")
    features = columns_of(tables)
    ids = {"guest": ("credit", "id"), "host": ("credit", "id")}
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        model = VerticalLogisticRegression(
            fed, label=("guest", "y"), features=features,
            bounds={p: [20.0] * len(c) for p, c in features.items()}, dealer="dealer",
            epochs=3, batch_size=64, name="est", holdout=0.25, progress=True)
        with pytest.raises(Exception, match="not fitted yet"):
            model.predict_proba("nowhere")
        with pytest.raises(Exception, match="not fitted yet"):
            model.score("nowhere")
        trained_on = fed.psi(ids, alignment="est-train")
        model.fit(trained_on)
        auc = model.score(trained_on)  # the held-out quarter
        scored = model.predict_proba(fed.psi(ids, alignment="est-later"), job_id="est-scores")
    assert "3/3" in capsys.readouterr().err  # a progress bar per epoch
    assert model.model_ == "est"
    assert list(model.history_.columns) == ["epoch", "loss", "seconds", "bytes"]
    assert (model.history_["seconds"] > 0).all() and (model.history_["bytes"] > 10_000).all()
    assert len(model.history_) == 3 and model.get_params()["holdout"] == 0.25
    assert auc == model.evaluation_.auc and auc > 0.95
    assert "holdout_seed" not in model.get_params()
    assert model.evaluation_.auc_error_bound <= 1e-3 and 0.85 < model.evaluation_.accuracy <= 1
    assert scored.recipient == "guest"
    saved = pd.read_csv(layout.party_configs["guest"].parent / "guest-results" / "predictions"
                        / "est-scores.csv")
    guest = pd.read_csv(tables["guest"][0])
    assert roc_auc_score(guest["y"].to_numpy()[saved["row"]], saved["score"]) > 0.98
    png = model.plot_history(tmp_path / "vertical.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


# --- what an attacker's review found (each test failed before its fix) -----------------------

def test_weights_beyond_their_bound_are_clipped_on_shares_as_in_float64():
    """A weight beyond weight_bound made the sigmoid's narrow comparison wrap: the model
    came out [1881.7, 1881.7, -2682.3] where float64 gave [9.24, 9.24, 0.17], silently."""
    joined, guest, host = breast()
    y = joined["y"].to_numpy(float)
    blocks = [joined[guest].to_numpy(), joined[host].to_numpy()]
    schedule = Schedule(epochs=2, batch_size=32, learning_rate=0.5, l2=0.0, seed=2,
                        weight_bound=0.25)
    weights, _ = run(inprocess_engine(2), blocks, y, schedule)
    plain = train_plain(np.concatenate(blocks, axis=1), y, schedule)
    assert np.abs(plain).max() == pytest.approx(0.25)  # the bound binds
    assert np.max(np.abs(weights - plain)) <= 1e-3


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, 300), size=st.integers(1, 100))
def test_every_mini_batch_holds_a_batch_of_rows(rows, size):
    """A remainder alone in the last batch let a requester who knows the public order put a
    chosen row there, alone (its label came out of the model, 20 of 20 times)."""
    from invisible.protocols.batches import mini_batches

    order = np.random.default_rng(rows).permutation(rows)
    batches = mini_batches(order, size)
    assert np.array_equal(np.concatenate(batches), order)
    assert min(b.size for b in batches) >= min(rows, size)


def test_nothing_that_counts_the_rows_of_an_unreleased_alignment_reaches_the_requester(
        tmp_path):
    """The openings listed per batch, and predict's values opened (one per row), gave the
    size psi had kept from the requester."""
    from test_vertical_kind import columns_of, federation

    from invisible.coordinator.federation import Federation
    from invisible.coordinator.local import InProcessNodes
    from invisible.kinds.params import ColumnsRef
    from invisible.kinds.vertical_lr import VerticalLrParams
    from invisible.kinds.vertical_predict import VerticalPredictParams

    layout, tables = federation(tmp_path, "breast")
    features = columns_of(tables)
    bounds = {"guest": (20.0,) * 10, "host": (20.0,) * 20}
    ids = {"guest": ("credit", "id"), "host": ("credit", "id")}

    def inputs(label):
        return {p: ColumnsRef("@hidden", tuple(features[p]), bounds[p],
                              "y" if label and p == "guest" else None) for p in features}

    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(ids, alignment="hidden")
        size = nodes.nodes["guest"].executor.alignments.get("hidden").size
        trained = fed.run(VerticalLrParams(inputs=inputs(True), dealer="dealer", epochs=1,
                                           batch_size=64, model="h"), job_id="t")
        scored = fed.run(VerticalPredictParams(inputs=inputs(False), model="h", dealer="dealer",
                                               recipient="guest"), job_id="p")
        own = [e for e in nodes.nodes["guest"].ledger.entries() if e.job_id == "p"]
    for result in (trained, scored):
        for party in ("guest", "host"):
            text = json.dumps({"receipts": result.receipts[party],
                               "output": result.job.outputs[party],
                               "record": result.records[party].__dict__})
            assert '"openings"' not in text.replace('"openings": []', "")
            assert result.records[party].values_opened == 0
            assert all(r["rows"] == 0 and r["body"]["values_opened"] == 0
                       and r["body"]["outputs"].get("values_opened", 0) == 0
                       for r in result.receipts[party])
    assert [e.body["values_opened"] for e in own if e.event == "rows"] == [size]  # kept here


def test_every_range_is_planned_from_the_parameters_so_no_error_depends_on_the_rows():
    """A bound chosen near a range's edge made the loss fail or run by the row count (63 rows
    failed at B = 2^29/63 and ran at 2^29/64): the plan now uses max_rows, a parameter."""
    from invisible.kinds.params import ColumnsRef
    from invisible.kinds.vertical_lr import VerticalLrParams

    def params(bound, **changes):
        return VerticalLrParams(inputs={"a": ColumnsRef("@x", ("c",), (bound,), "y"),
                                        "b": ColumnsRef("@x", ("d",), (bound,))},
                                dealer="dealer", **changes)

    params(100.0).check(("a", "b", "dealer"))
    with pytest.raises(ConfigError, match="vertical_lr loss: .* lower the bounds, weight_bound "
                                          "or max_rows"):
        params(2.0**12).check(("a", "b", "dealer"))
    params(2.0**12, losses=False).check(("a", "b", "dealer"))
    params(2.0**12, max_rows=1000).check(("a", "b", "dealer"))


def test_models_are_each_requesters_own_and_their_parts_must_come_from_one_job(tmp_path):
    """A model name taken by one requester told another that it existed (and could be
    squatted); a party holding a part from another training job was not noticed."""
    import shutil

    from test_vertical_kind import columns_of, federation

    from invisible.coordinator.federation import Federation
    from invisible.coordinator.local import InProcessNodes
    from invisible.errors import ProtocolError
    from invisible.kinds.params import ColumnsRef
    from invisible.kinds.vertical_lr import VerticalLrParams
    from invisible.kinds.vertical_predict import VerticalPredictParams

    layout, tables = federation(tmp_path, "breast", coordinators=("coordinator", "other"))
    features = columns_of(tables)
    bounds = {"guest": (20.0,) * 10, "host": (20.0,) * 20}
    ids = {"guest": ("credit", "id"), "host": ("credit", "id")}

    def inputs(alignment, label=True):
        return {p: ColumnsRef(alignment, tuple(features[p]), bounds[p],
                              "y" if label and p == "guest" else None) for p in features}

    def training(alignment, name):
        return VerticalLrParams(inputs=inputs(alignment), dealer="dealer", epochs=1,
                                batch_size=128, model=name, losses=False)

    with InProcessNodes(layout):
        with Federation.from_config(layout.coordinator_configs["coordinator"]) as fed:
            fed.psi(ids, alignment="a")
            fed.run(training("@a", "same"))
            fed.run(training("@a", "other-job"))
        with Federation.from_config(layout.coordinator_configs["other"]) as other:
            other.psi(ids, alignment="b")
            other.run(training("@b", "same"))  # its own name: nothing told, nothing taken
            with pytest.raises(ProtocolError, match="no model named 'other-job'"):
                other.run(VerticalPredictParams(inputs=inputs("@b", False), model="other-job",
                                                dealer="dealer", recipient="guest"))
    host = layout.party_configs["host"].parent / "host-results" / "models" / "coordinator"
    (host / "same.npz").unlink()
    shutil.copy(host / "other-job.npz", host / "same.npz")  # a part of another job
    with InProcessNodes(layout), \
            Federation.from_config(layout.coordinator_configs["coordinator"]) as fed, \
            pytest.raises(ProtocolError, match="parts of model 'same' come from different "
                                               "training jobs"):
        fed.run(VerticalPredictParams(inputs=inputs("@a", False), model="same",
                                      dealer="dealer", recipient="guest"))


def test_a_weight_moved_to_the_edge_of_its_planned_bound_is_still_clipped_exactly():
    """The within-epoch bound W + steps lr B had no slack for fixed point: a feature at its
    bound encodes above it and the step's truncation rounds up, so one step from w = W took
    a weight 3 ulps beyond the plan and the clip's comparison wrapped it to -24 (a review)."""
    from test_mpc import F, open_result

    from invisible.crypto.fixedpoint import encode
    from invisible.crypto.sharing import share
    from invisible.protocols.mpc import logistic
    from invisible.protocols.mpc.shared import SharedArray

    bound, limit, rows = 2 + 0.6 * 2**-F, 8.0, 4
    rate = (16 - 2**-F) / bound  # W + W + lr B = 32 - 2^-16: the clip's width to the ulp
    schedule = Schedule(epochs=1, batch_size=rows, learning_rate=rate, l2=0.0, seed=0,
                        weight_bound=limit, max_rows=rows)
    drifted = limit + logistic.drift(schedule, bound, rows)
    x = np.tile([-bound, bound, 1.0], (rows, 1))
    w0 = np.full(3, limit)
    plain = np.clip(w0 - rate / rows * (x.T @ logistic.sigmoid_t1(x @ w0)), -limit, limit)
    engine = inprocess_engine(3)
    xs = share(encode(x, bound, F), 3, Prg.from_os())
    ys = share(encode(np.zeros(rows), 1, F), 3, Prg.from_os())
    ws = share(encode(w0.reshape(-1, 1), limit, F), 3, Prg.from_os())

    def program(ctx, provider):
        w = SharedArray(ws[ctx.index], drifted, F, ctx.is_leader)
        y = SharedArray(ys[ctx.index], 1.0, F, ctx.is_leader)
        stepped = logistic._step(ctx, provider, xs[ctx.index], y, w, np.arange(rows),
                                 schedule, bound, drifted, 1.0)
        return logistic._clip(ctx, provider, stepped, -limit, limit).share

    for _ in range(3):  # the truncations round up at random
        got = decode(open_result(engine.run(program), engine.parties), F).ravel()
        assert np.max(np.abs(got - plain)) <= 4 * 2**-F


def test_a_tiny_learning_rate_trains_as_float64_does():
    """_scaled asked the dealer for a 62-bit truncation for a tiny lr (a review)."""
    joined, guest, host = breast()
    y = joined["y"].to_numpy(float)
    blocks = [joined[guest].to_numpy(), joined[host].to_numpy()]
    schedule = Schedule(epochs=1, batch_size=256, learning_rate=1e-8, l2=0.0, seed=1)
    weights, _ = run(inprocess_engine(2), blocks, y, schedule)
    assert np.max(np.abs(weights - train_plain(np.concatenate(blocks, axis=1), y, schedule))) \
        <= 1e-4
