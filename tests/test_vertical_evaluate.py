"""`vertical_evaluate` (and `vertical_predict`) on party node processes: three
institutions (the label holder and two feature holders, FATE's breast host columns
split in two), each keeping a different 90% of the people, align them by psi, train on
the rows the label holder does not hold out, and evaluate on those it does, before and
after the nodes restart; every metric is checked against numpy and scikit-learn on the
same held-out rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import (
    OPEN_POLICY,
    InProcessNodes,
    LocalDataset,
    NodeProcesses,
    write_local_federation,
)
from invisible.crypto.fixedpoint import decode
from invisible.crypto.sharing import reconstruct
from invisible.errors import ConfigError, ProtocolError
from invisible.kinds.alignments import AlignmentStore
from invisible.kinds.models import ModelStore
from invisible.kinds.params import ColumnsRef
from invisible.kinds.splits import split_seed, stratified_test_rows
from invisible.kinds.vertical_evaluate import VerticalEvaluateParams
from invisible.kinds.vertical_lr import VerticalLrParams
from invisible.kinds.vertical_predict import VerticalPredictParams
from invisible.protocols.mpc.evaluation import LOG_LOSS_MAX_ERROR
from invisible.protocols.mpc.logistic import train_plain

DATA = Path(__file__).parent / "data"
PARTIES = ("guest", "host", "other")


def three_institutions(tmp: Path, raw_other: bool = False):
    """guest: y and x0..x9; host: the host's first 10 columns; other: its last 10 (with
    `raw_other`, in other units: x 1000 + 5000). Each keeps a different random 90% of the
    ids, shuffled."""
    read = {side: pd.read_csv(DATA / f"breast_hetero_{side}.csv.gz") for side in ("guest", "host")}
    host = [c for c in read["host"].columns if c.startswith("x")]
    frames = {"guest": read["guest"], "host": read["host"][["id", *host[:10]]],
              "other": read["host"][["id", *host[10:]]]}
    if raw_other:
        frames["other"] = frames["other"].assign(**{c: frames["other"][c] * 1000 + 5000
                                                    for c in host[10:]})
    datasets, features = {}, {}
    for offset, (party, frame) in enumerate(frames.items()):
        rng = np.random.default_rng(40 + offset)
        kept = frame[rng.random(len(frame)) < 0.9].sample(frac=1.0, random_state=offset)
        path = tmp / f"{party}.csv"
        kept.to_csv(path, index=False)
        features[party] = [c for c in frame.columns if c.startswith("x")]
        columns = {"id": "int", **({"y": "int"} if party == "guest" else {}),
                   **{c: "float" for c in features[party]}}
        datasets[party] = {"credit": LocalDataset(path, columns, dict(OPEN_POLICY))}
    layout = write_local_federation(tmp / "fed", PARTIES, datasets, dealers=["dealer"],
                                    limits={"rpc_timeout_s": 60.0})
    return layout, features


def inputs(features, label: bool):
    return {p: ColumnsRef("@b", tuple(cols), (20.0,) * len(cols),
                          "y" if label and p == "guest" else None)
            for p, cols in features.items()}


@pytest.mark.timeout(600)
def test_three_institutions_train_on_a_split_and_evaluate_the_held_out_rows_after_a_restart(
        tmp_path):
    layout, features = three_institutions(tmp_path)
    training = VerticalLrParams(inputs=inputs(features, True), dealer="dealer", epochs=10,
                                batch_size=32, learning_rate=0.1, l2=0.001, seed=4,
                                model="m", split=0.25)
    evaluation = VerticalEvaluateParams(inputs=inputs(features, True), model="m",
                                        dealer="dealer", split=0.25, threshold=0.4)
    scoring = VerticalPredictParams(inputs=inputs(features, False), model="m", dealer="dealer",
                                    recipient="guest")
    runs = []
    for restart in range(2):
        with NodeProcesses(layout) as nodes, \
                Federation.from_config(layout.coordinator_config) as fed:
            fed.health(timeout_s=60)
            if not restart:
                fed.psi({p: ("credit", "id") for p in PARTIES}, alignment="b")
                history = fed.run(training).history()
            runs.append(fed.run(evaluation))
            fed.run(scoring, job_id=f"scores-{restart}")
            nodes.check_alive()
    assert list(history.columns) == ["epoch", "loss", "seconds", "bytes"]

    # The reference: the same rows, split and model in the clear.
    folder = {p: layout.party_configs[p].parent for p in PARTIES}
    aligned = {p: AlignmentStore(folder[p] / f"{p}-results" / "alignments").get("b")
               for p in PARTIES}
    frames = {p: pd.read_csv(tmp_path / f"{p}.csv").iloc[aligned[p].rows] for p in PARTIES}
    assert all((frames[p]["id"].to_numpy() == frames["guest"]["id"].to_numpy()).all()
               for p in PARTIES)
    x = np.concatenate([frames[p][features[p]].to_numpy() for p in PARTIES], axis=1)
    y = frames["guest"]["y"].to_numpy(float)
    test = stratified_test_rows(y, 0.25, split_seed(0.25, aligned["guest"]))
    train = np.setdiff1d(np.arange(y.size), test)
    assert abs(test.size - 0.25 * y.size) <= 2 and abs(y[test].mean() - y.mean()) < 0.01
    parts = [ModelStore(folder[p] / f"{p}-results" / "models").get("m", "coordinator")
             for p in PARTIES]
    weights = decode(reconstruct(np.stack([m.part for m in parts])), 16)
    assert np.max(np.abs(weights - train_plain(x[train], y[train], training.schedule()))) <= 1e-3
    scores = x[test] @ weights[:-1] + weights[-1]

    first, again = runs
    exact = roc_auc_score(y[test], scores)
    for result in runs:
        assert abs(result.auc - exact) <= result.auc_error_bound + 1e-4
        assert result.auc_error_bound <= 1e-3
        assert result.accuracy == pytest.approx(
            accuracy_score(y[test], scores >= np.log(0.4 / 0.6)), abs=2.0**-15)
        loss = np.mean(np.logaddexp(0, scores) - y[test] * scores)
        assert abs(result.log_loss - loss) <= LOG_LOSS_MAX_ERROR
    assert again.auc == pytest.approx(first.auc, abs=2 * first.auc_error_bound + 1e-4)
    # As good as scikit-learn on the pooled rows of the same split.
    pooled = LogisticRegression(max_iter=5000).fit(x[train], y[train])
    assert first.auc >= roc_auc_score(y[test], pooled.decision_function(x[test])) - 0.005
    # The scores before and after the restart, to the label holder only.
    saved = [pd.read_csv(folder["guest"] / "guest-results" / "predictions" / f"scores-{r}.csv")
             for r in range(2)]
    assert np.max(np.abs(saved[0]["score"] - saved[1]["score"])) <= 1e-3
    assert np.max(np.abs(saved[0]["score"] - (x @ weights[:-1] + weights[-1]))) <= 1e-3


def test_standardised_features_train_the_model_of_the_standardised_rows(tmp_path):
    """Columns in other units (x 1000 + 5000: beyond any useful fixed-point range as they
    are) are standardised by their owner on the training rows; later jobs apply the same."""
    layout, features = three_institutions(tmp_path, raw_other=True)
    training = VerticalLrParams(inputs=inputs(features, True), dealer="dealer", epochs=3,
                                batch_size=32, seed=4, model="std", split=0.25,
                                standardise=True)
    evaluation = VerticalEvaluateParams(inputs=inputs(features, True), model="std",
                                        dealer="dealer", split=0.25)
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.psi({p: ("credit", "id") for p in PARTIES}, alignment="b")
        fed.run(training)
        result = fed.run(evaluation)
        with pytest.raises(Exception, match="beyond the job's declared bound"):  # unscaled
            fed.run(VerticalLrParams(inputs=inputs(features, True), dealer="dealer",
                                     epochs=1, model="raw"))
    folder = {p: layout.party_configs[p].parent for p in PARTIES}
    aligned = {p: AlignmentStore(folder[p] / f"{p}-results" / "alignments").get("b")
               for p in PARTIES}
    frames = {p: pd.read_csv(tmp_path / f"{p}.csv").iloc[aligned[p].rows] for p in PARTIES}
    y = frames["guest"]["y"].to_numpy(float)
    test = stratified_test_rows(y, 0.25, split_seed(0.25, aligned["guest"]))
    train = np.setdiff1d(np.arange(y.size), test)
    blocks = []
    for p in PARTIES:
        raw = frames[p][features[p]].to_numpy()
        center, scale = raw[train].mean(0), raw[train].std(0)
        kept = ModelStore(folder[p] / f"{p}-results" / "models").get("std", "coordinator")
        assert np.allclose(kept.scaling, [center, scale])  # its own columns' only
        blocks.append((raw - center) / scale)
    x = np.concatenate(blocks, axis=1)
    parts = [ModelStore(folder[p] / f"{p}-results" / "models").get("std", "coordinator").part
             for p in PARTIES]
    weights = decode(reconstruct(np.stack(parts)), 16)
    assert np.max(np.abs(weights - train_plain(x[train], y[train], training.schedule()))) <= 1e-3
    exact = roc_auc_score(y[test], x[test] @ weights[:-1] + weights[-1])
    assert abs(result.auc - exact) <= result.auc_error_bound + 1e-4 and result.auc > 0.95


def test_every_row_is_a_test_row_with_the_same_probability_whatever_its_label():
    """A class of 3 among 200 rows: with largest-remainder rounding no positive was ever a
    test row at split 0.1 (20 certain negatives from one job), every one at 0.9."""
    labels = np.zeros(200)
    labels[[5, 50, 150]] = 1
    for fraction in (0.1, 0.25, 0.5):
        draws = np.zeros(200)
        for seed in range(4000):
            draws[stratified_test_rows(labels, fraction, seed.to_bytes(16, "big"))] += 1
        rate = draws / 4000
        assert abs(rate[labels == 1].mean() - fraction) < 0.02
        assert abs(rate[labels == 0].mean() - fraction) < 0.01


def test_a_job_cannot_choose_the_split_seed_a_free_fraction_or_threshold_or_weight_bound():
    features = {"guest": ["x0"], "host": ["x1"]}
    parties = ("guest", "host", "dealer")
    base = VerticalEvaluateParams(inputs=inputs(features, True), model="m", dealer="dealer")
    with pytest.raises(ConfigError, match="unknown parameter"):  # one draw per alignment
        VerticalLrParams.read({**VerticalLrParams(inputs=inputs(features, True),
                                                  dealer="dealer").to_json(), "split_seed": 3})
    for field in ("weight_bound", "split_seed"):  # the model's weight bound, not the job's
        with pytest.raises(ConfigError, match="unknown parameter"):
            VerticalEvaluateParams.read({**base.to_json(), field: 3})
    with pytest.raises(ConfigError, match="'split' must be one of"):
        VerticalEvaluateParams(inputs=inputs(features, True), model="m", dealer="dealer",
                               split=0.13).check(parties)
    with pytest.raises(ConfigError, match="'threshold' must be one of"):  # no sweeping
        VerticalEvaluateParams(inputs=inputs(features, True), model="m", dealer="dealer",
                               threshold=0.37).check(parties)


def test_k_counts_the_smallest_class_of_the_scored_rows_at_the_label_holder(tmp_path):
    """An AUC over one positive is that person's rank among the negatives: the label
    holder applies k to the rarer class of the rows it scores (before any model is read)."""
    from test_vertical_kind import columns_of, federation

    from invisible.errors import PolicyError

    policy = {**OPEN_POLICY, "min_rows": 25}
    layout, tables = federation(tmp_path, "breast", policy=policy)
    features = columns_of(tables)

    def evaluate(split):
        return VerticalEvaluateParams(
            inputs={p: ColumnsRef("@b", tuple(c), (20.0,) * len(c), "y" if p == "guest" else None)
                    for p, c in features.items()},
            model="none", dealer="dealer", split=split)

    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.psi({"guest": ("credit", "id"), "host": ("credit", "id")}, alignment="b")
        with pytest.raises(PolicyError, match="k-threshold") as refused:
            fed.run(evaluate(0.1))  # about 17 of the rarer class: fewer than 25
        assert "on party 'guest'" in str(refused.value)  # the label holder alone
        with pytest.raises(ProtocolError, match="no model named 'none'"):  # past the k check
            fed.run(evaluate(0.25))


def test_evaluate_refuses_a_job_without_one_label_or_with_bins_not_a_power_of_two():
    features = {"a": ["x0"], "b": ["x1"]}
    parties = ("a", "b", "dealer")
    with pytest.raises(ConfigError, match="exactly one party names a label"):
        VerticalEvaluateParams(inputs=inputs(features, False), model="m",
                               dealer="dealer").check(parties)
    with pytest.raises(ConfigError, match="power of two"):
        VerticalEvaluateParams(inputs={**inputs(features, False),
                                       "a": ColumnsRef("@b", ("x0",), (1.0,), "y")},
                               model="m", dealer="dealer", bins=1000).check(parties)
