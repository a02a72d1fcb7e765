"""Benchmark `vertical_lr`: logistic regression trained on secret shares, two institutions.

Data: FATE's default_credit vertical split (guest: 13 features and the label;
host: 10 features), shipped gzipped in tests/data, split 80/20 stratified by
the label (seed 0): the training rows go to the two party nodes, the test
rows stay with the benchmark. The schedule, the same for every peer:
10 epochs (--quick: 1), batch 1024, learning rate 0.1, no L2, SecretFlow's
default clipped-linear sigmoid (`t1`), the batches in the order
`batch_order` draws over the alignment's rows.

Rows:
- `seconds` (training end to end: `Federation.run` of the job after the PSI,
  guest, host and a dealer as node processes over mTLS on loopback), against
  `spu` (SecretFlow's SS-SGD algorithm in SPU 0.9.5's simulator, SEMI2K with
  two parties and FM64, the closest to two parties and a dealer, from the
  benchmark's SPU venv; the same rows in the same order per epoch, the same
  sigmoid) and `scikit-learn` (centralised `LogisticRegression`, plaintext);
- `auc` on the test rows: ours (the model rebuilt from the parties' shares,
  which only a benchmark with every node's files may do) against
  `scikit-learn` and `float64` (the same algorithm in numpy, `train_plain`),
  and SPU's model;
- `bytes/party` (what the guest node sent in the job) and `messages/epoch`
  (the guest's messages to the host per epoch: one per opening, so the
  protocol's rounds per epoch).
"""

from __future__ import annotations

import gzip
import io
import json
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from invisible.benchmarking import Row, measure, run_peer
from invisible.coordinator.federation import Federation
from invisible.coordinator.local import (
    OPEN_POLICY,
    LocalDataset,
    NodeProcesses,
    write_local_federation,
)
from invisible.crypto.fixedpoint import decode
from invisible.crypto.sharing import reconstruct
from invisible.kinds.alignments import AlignmentStore
from invisible.kinds.models import ModelStore
from invisible.kinds.params import ColumnsRef
from invisible.kinds.vertical_lr import FRACTIONAL_BITS, VerticalLrParams
from invisible.protocols.mpc.logistic import batch_order, train_plain

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
BOUND = 100.0  # every feature of the split lies within 72.8
_PEER_TIMEOUT_S = 1800

_SPU = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import jax.numpy as jnp
    import spu.libspu as libspu
    import spu.utils.simulation as spsim

    folder, batch, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    data = np.load(f"{folder}/spu.npz")
    x, y, orders = data["x"], data["y"], data["orders"]
    rows, d = x.shape

    def t1(z):
        r = 0.5 + 0.25 * z
        return jnp.select([r < 0, r > 1], [0.0, 1.0], r)

    def epoch(xs, ys, w):
        xs = jnp.concatenate([xs, jnp.ones((xs.shape[0], 1), xs.dtype)], axis=1)
        count = max(1, rows // batch)  # a remainder joins the last batch, as ours
        for i in range(count):
            end = (i + 1) * batch if i < count - 1 else rows
            xb, yb = xs[i * batch:end], ys[i * batch:end].reshape(-1, 1)
            g = xb.T @ (t1(xb @ w) - yb) / xb.shape[0]
            w = w - lr * g
        return w

    config = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.SEMI2K,
                                  field=libspu.FieldType.FM64, fxp_fraction_bits=18)
    fn = spsim.sim_jax(spsim.Simulator(2, config), epoch)
    w = np.zeros((d + 1, 1))
    started = time.perf_counter()
    for order in orders:
        w = fn(x[order], y[order], w)
    print("RESULT", json.dumps({"seconds": time.perf_counter() - started,
                                "w": np.asarray(w).ravel().tolist()}))
""")


def _split(folder: Path) -> tuple[dict[str, Path], dict[str, list[str]], pd.DataFrame]:
    tables = {side: pd.read_csv(io.BytesIO(gzip.decompress(
        (DATA / f"default_credit_hetero_{side}.csv.gz").read_bytes())))
        for side in ("guest", "host")}
    train_ids, test_ids = train_test_split(tables["guest"]["id"], test_size=0.2,
                                           stratify=tables["guest"]["y"], random_state=0)
    paths, features = {}, {}
    for side, table in tables.items():
        paths[side] = folder / f"{side}.csv"
        kept = table[table["id"].isin(train_ids)].sample(frac=1.0, random_state=1)
        kept.to_csv(paths[side], index=False)
        features[side] = [c for c in table.columns if c.startswith("x")]
    test = tables["guest"].merge(tables["host"], on="id", suffixes=(".guest", ".host"))
    return paths, features, test[test["id"].isin(test_ids)]


def _names(features: dict[str, list[str]]) -> list[str]:
    """The joined test table's names of every feature (pandas suffixes only repeated names)."""
    both = set(features["guest"]) & set(features["host"])
    return [f"{c}.{side}" if c in both else c for side, cols in features.items() for c in cols]


def run(quick: bool) -> list[Row]:
    epochs = 1 if quick else 10
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="invisible-bench-") as name:
        folder = Path(name)
        paths, features, test = _split(folder)
        datasets = {}
        for side, path in paths.items():
            columns = {"id": "int", **({"y": "int"} if side == "guest" else {}),
                       **{f: "float" for f in features[side]}}
            datasets[side] = {"credit": LocalDataset(path, columns, dict(OPEN_POLICY))}
        layout = write_local_federation(folder / "federation", ["guest", "host"], datasets,
                                        dealers=["dealer"], limits={"rpc_timeout_s": 600.0,
                                                                    "job_timeout_s": 3600.0})
        models = []

        def params(model: str) -> VerticalLrParams:
            return VerticalLrParams(
                inputs={"guest": ColumnsRef("@train", tuple(features["guest"]),
                                            (BOUND,) * 13, "y"),
                        "host": ColumnsRef("@train", tuple(features["host"]), (BOUND,) * 10)},
                dealer="dealer", epochs=epochs, batch_size=1024, learning_rate=0.1, l2=0.0,
                seed=0, model=model, losses=False)

        with NodeProcesses(layout) as nodes, \
                Federation.from_config(layout.coordinator_config) as fed:
            fed.health(timeout_s=120)
            nodes.check_alive()
            fed.psi({"guest": ("credit", "id"), "host": ("credit", "id")}, alignment="train",
                    timeout_s=600)

            def train_once() -> None:
                models.append(fed.run(params(f"m{len(models)}"), timeout_s=3600))

            ours = measure(train_once, repeats=1 if quick else 2, warmup=0)
        result = models[-1]
        base = {p: layout.party_configs[p].parent / f"{p}-results" for p in ("guest", "host")}
        parts = [ModelStore(base[p] / "models").get(result.model, "coordinator").part
                 for p in ("guest", "host")]
        w = decode(reconstruct(np.stack(parts)), FRACTIONAL_BITS)
        aligned = {p: AlignmentStore(base[p] / "alignments").get("train").rows
                   for p in ("guest", "host")}
        frames = {p: pd.read_csv(paths[p]).iloc[aligned[p]] for p in ("guest", "host")}
        x_train = np.concatenate([frames[p][features[p]].to_numpy() for p in ("guest", "host")],
                                 axis=1)
        y_train = frames["guest"]["y"].to_numpy(float)
        x_test = test[_names(features)].to_numpy()
        y_test = test["y"].to_numpy()

        def auc(weights: np.ndarray) -> float:
            return float(roc_auc_score(y_test, x_test @ weights[:-1] + weights[-1]))

        case = (f"default_credit vertical ({len(y_train):,} training rows, 13 + 10 features), "
                f"guest + host + dealer nodes over mTLS, {epochs} epochs, batch 1024, lr 0.1")
        plain = train_plain(x_train, y_train, params("x").schedule())
        started = time.perf_counter()
        sklearn = LogisticRegression(max_iter=1000).fit(x_train, y_train)
        sklearn_s = time.perf_counter() - started
        orders = np.stack([batch_order(0, e, len(y_train)) for e in range(epochs)])
        np.savez(folder / "spu.npz", x=x_train, y=y_train, orders=orders)
        printed = run_peer("spu", ["spu==0.9.5"], _SPU, [str(folder), "1024", "0.1"],
                           not quick, _PEER_TIMEOUT_S)
        spu = None
        if isinstance(printed, str):
            spu_note = printed
        else:
            lines = [x for x in printed if x.startswith("RESULT ")]
            spu = json.loads(lines[-1].removeprefix("RESULT ")) if lines else None
            spu_note = ("SPU 0.9.5 simulator, SEMI2K, 2 parties, FM64, the same rows in the "
                        "same order, t1 sigmoid" if spu else "spu printed no result")
        ratio = f"; ours/peer {ours.median / spu['seconds']:.2f}" if spu else ""
        rows.append(Row(case, "seconds", "lower", ours.median, "spu",
                        spu["seconds"] if spu else None, f"ours {ours.describe()}; {spu_note}"
                        f"{ratio}"))
        rows.append(Row(case, "seconds", "lower", ours.median, "scikit-learn", sklearn_s,
                        "centralised LogisticRegression (lbfgs), plaintext"))
        ours_auc = auc(w)
        rows.append(Row(case, "auc", "higher", ours_auc, "scikit-learn",
                        float(roc_auc_score(y_test, sklearn.decision_function(x_test))),
                        "on the 20% test rows"))
        rows.append(Row(case, "auc", "higher", ours_auc, "float64", auc(plain),
                        f"the same algorithm in numpy; max |weight difference| "
                        f"{np.max(np.abs(w - plain)):.2e}"))
        rows.append(Row(case, "auc", "higher", ours_auc, "spu",
                        auc(np.asarray(spu["w"])) if spu else None, spu_note))
        record = result.records["guest"]
        rows.append(Row(case, "bytes/party", "lower", float(record.bytes_sent),
                        note="sent by the guest node in the job (to the host and the dealer)"))
        rows.append(Row(case, "messages/epoch", "lower", record.messages_sent / epochs,
                        note="the guest's messages per epoch: one to the host per opening "
                             "(the rounds), plus its tuple requests to the dealer"))
    return rows
