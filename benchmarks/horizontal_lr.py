"""Benchmark `horizontal_lr`: federated averaging of logistic regression, three parties.

Data: FATE's default_credit_homo (guest, host_1, host_2: 8,000 rows x 23
features each; `_test`: 6,000 rows), shipped gzipped in tests/data. The
schedule, the same for every peer: 10 rounds (--quick: 3), one local epoch a
round, batch 1024, learning rate 0.1, no L2, FedAvg weighted by rows; the
local epoch visits the rows in the order `batch_order` gives (a hash of
seed, party, round and epoch), last partial batch included.

Rows:
- `seconds` (lower is better): ours, `Federation.run` of the job end to end,
  three party node processes over mTLS on loopback, against `flwr` (Flower 1.42's FedAvg simulation, plaintext
  aggregation) and `flwr-secagg+` (the same with its SecAgg+ workflow), in a
  venv of their own (`.bench-venvs/flwr`; Flower brings Ray). A Flower run's
  time is its rounds only (from the workflow's start to its end, its own
  clock), not Ray's start-up, which the note gives as its wall time.
- `auc` on `_test` (higher is better): ours against `plaintext-fedavg` (the
  same algorithm in float64, `fedavg_plain`), `scikit-learn` (pooled,
  centralised `LogisticRegression`), and each Flower run's final model.
- `ms/round`: secure aggregation alone, one round of a 10^6-element update
  (--quick: 10^5) among three parties: ours, the masked all-to-all sum of
  `fedavg` over gRPC and mTLS between three nodes of one process (rounds
  after the pairwise keys), against `flwr-secagg+` on the same vector size
  (its rounds after the first).

Every timing is the median of five runs after a warm-up, with its quartiles
(a Flower simulation runs six times in one process, the first unmeasured);
--quick runs each Flower simulation once, as it starts Ray every time.
"""

from __future__ import annotations

import gzip
import json
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from invisible.benchmarking import Row, Timing, measure, run_peer, timing_of
from invisible.coordinator.federation import Federation
from invisible.coordinator.local import (
    OPEN_POLICY,
    InProcessNodes,
    LocalDataset,
    NodeProcesses,
    write_local_federation,
)
from invisible.jobspec import JobSpec
from invisible.kinds.horizontal_lr import FRACTIONAL_BITS, HorizontalLrParams
from invisible.kinds.params import ColumnsRef
from invisible.protocols.fedavg import fedavg_plain, masked_total
from invisible.protocols.seeds import agree_pairwise_secrets

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
PARTIES = {"guest": "guest", "host-1": "host_1", "host-2": "host_2"}
FLOWER = ["flwr[simulation]==1.42.*", "pandas", "scikit-learn"]
_PEER_TIMEOUT_S = 1800
#: Timed runs of ours and of every peer, each after a warm-up.
REPEATS = 5

#: Flower's FedAvg of the same model, schedule and batch orders (the client's local epoch is
#: `local_update` of invisible.protocols.fedavg, copied: the peer's venv has no invisible).
_FLOWER_LR = textwrap.dedent("""
    import hashlib, json, logging, sys, time
    import numpy as np, pandas as pd
    from sklearn.metrics import roc_auc_score
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    mode, folder, rounds, batch, lr, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), \\
        int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
    parties, runs = sys.argv[7].split(","), int(sys.argv[8])
    frames = [pd.read_csv(f"{folder}/{p}.csv") for p in parties]
    features = [c for c in frames[0].columns if c.startswith("x")]
    data = [(f[features].to_numpy(float), f["y"].to_numpy(float)) for f in frames]
    test = pd.read_csv(f"{folder}/test.csv")

    def order(party, rnd, rows):
        digest = hashlib.sha256(f"{seed}/{party}/{rnd}/0".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:16], "big")).permutation(rows)

    class Client(NumPyClient):
        def __init__(self, cid):
            self.cid = cid
        def fit(self, parameters, config):
            w = np.concatenate([parameters[0], parameters[1]]).astype(float)
            x, y = data[self.cid]
            rnd = int(config.get("server_round", 1)) - 1
            rows = order(parties[self.cid], rnd, len(y))
            count = max(1, len(y) // batch)  # a remainder joins the last batch, as ours
            for idx in [rows[i * batch:(i + 1) * batch] for i in range(count - 1)] + \
                    [rows[(count - 1) * batch:]]:
                residual = 0.5 * (1 + np.tanh(0.5 * (x[idx] @ w[:-1] + w[-1]))) - y[idx]
                gradient = np.concatenate([x[idx].T @ residual / idx.size, [residual.mean()]])
                w = w - lr * gradient
            return [w[:-1], w[-1:]], len(y), {}

    app = ClientApp(client_fn=lambda ctx: Client(int(ctx.node_config["partition-id"])).to_client(),
                    mods=[secaggplus_mod] if mode == "secagg" else [])
    result = {}

    def evaluate(rnd, parameters, config):
        result[rnd] = (time.perf_counter(), parameters)
        return 0.0, {}

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        d = len(features)
        strategy = FedAvg(fraction_fit=1.0, min_fit_clients=len(parties),
                          min_available_clients=len(parties), fraction_evaluate=0.0,
                          evaluate_fn=evaluate,
                          on_fit_config_fn=lambda rnd: {"server_round": rnd},
                          initial_parameters=ndarrays_to_parameters([np.zeros(d), np.zeros(1)]))
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds),
                               strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
            num_shares=len(parties), reconstruction_threshold=2, max_weight=20000)) \\
            if mode == "secagg" else DefaultWorkflow()
        workflow(grid, legacy)

    times, walls = [], []
    for _ in range(runs):
        result.clear()
        started = time.perf_counter()
        run_simulation(server_app=server, client_app=app, num_supernodes=len(parties),
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": 2, "include_dashboard": False,
                                                     "logging_level": logging.ERROR}})
        walls.append(time.perf_counter() - started)
        times.append(result[rounds][0] - result[0][0])
    w, b = result[rounds][1]
    auc = roc_auc_score(test["y"], test[features].to_numpy(float) @ w + b[0])
    print("RESULT", json.dumps({"rounds_s": times, "wall_s": walls, "auc": auc}))
""")

#: Flower's SecAgg+ on one d-element vector, 3 clients: the median time of a round.
_FLOWER_VECTOR = textwrap.dedent("""
    import json, logging, sys, time
    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    d, rounds = int(sys.argv[1]), int(sys.argv[2])

    class Client(NumPyClient):
        def __init__(self, cid):
            self.cid = cid
        def fit(self, parameters, config):
            return [np.random.default_rng(self.cid).uniform(-1, 1, d)], 1000, {}

    app = ClientApp(client_fn=lambda ctx: Client(int(ctx.node_config["partition-id"])).to_client(),
                    mods=[secaggplus_mod])
    stamps = {}

    def evaluate(rnd, parameters, config):
        stamps[rnd] = time.perf_counter()
        return 0.0, {}

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_fit=1.0, min_fit_clients=3, min_available_clients=3,
                          fraction_evaluate=0.0, evaluate_fn=evaluate,
                          initial_parameters=ndarrays_to_parameters([np.zeros(d)]))
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds),
                               strategy=strategy)
        DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2,
                                                        max_weight=5000))(grid, legacy)

    run_simulation(server_app=server, client_app=app, num_supernodes=3,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False,
                                                 "logging_level": logging.ERROR}})
    per_round = np.diff([stamps[r] for r in range(rounds + 1)])
    print("RESULT", json.dumps({"round_s": per_round[1:].tolist()}))  # the first: warm-up
""")


def _flower(script: str, args: list[str], quick: bool) -> tuple[dict | None, str]:
    printed = run_peer("flwr", FLOWER, script, args, not quick, _PEER_TIMEOUT_S)
    if isinstance(printed, str):
        return None, printed
    lines = [x for x in printed if x.startswith("RESULT ")]
    if not lines:
        return None, "flwr printed no result"
    return json.loads(lines[-1].removeprefix("RESULT ")), "flwr 1.42 simulation (Ray), 3 clients"


def _write_data(folder: Path) -> tuple[dict[str, Path], list[str], pd.DataFrame]:
    paths = {}
    for party, source in PARTIES.items():
        paths[party] = folder / f"{party}.csv"
        paths[party].write_bytes(gzip.decompress(
            (DATA / f"default_credit_homo_{source}.csv.gz").read_bytes()))
    test = pd.read_csv(DATA / "default_credit_homo_test.csv.gz")
    (folder / "test.csv").write_text(test.to_csv(index=False))
    return paths, [c for c in test.columns if c.startswith("x")], test


def _aggregation(folder: Path, elements: int, rounds: int = REPEATS + 1) -> Timing:
    """One masked all-to-all sum of `elements` values among three nodes: the slowest
    party's time of each round after the first (the warm-up)."""
    names = list(PARTIES)
    layout = write_local_federation(folder / "aggregation", names,
                                    limits={"rpc_timeout_s": 120.0,
                                            "max_message_bytes": 1 << 27})
    values = {p: np.random.default_rng(i).uniform(-1, 1, elements) for i, p in enumerate(names)}
    times: dict[str, list[float]] = {p: [] for p in names}
    with InProcessNodes(layout) as nodes:
        spec = JobSpec("aggregation", "bench", tuple(names))
        channels = {p: node._open_channel(spec) for p, node in nodes.nodes.items()}

        def party(name: str) -> None:
            channel = channels[name]
            secrets = agree_pairwise_secrets(channel, step="fedavg")
            for r in range(rounds):
                started = time.perf_counter()
                masked_total(channel, secrets, values[name], 1000.0, FRACTIONAL_BITS,
                             f"round/{r}")
                times[name].append(time.perf_counter() - started)

        threads = [threading.Thread(target=party, args=(p,)) for p in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        for channel in channels.values():
            channel.close()
    slowest = np.max([times[p] for p in names], axis=0)
    return timing_of(slowest[1:].tolist())


def run(quick: bool) -> list[Row]:
    rounds = 3 if quick else 10
    # A Flower simulation starts Ray each time (about 5 s here): --quick runs it once.
    runs, warmup = (1, 0) if quick else (REPEATS + 1, 1)
    elements = 10**5 if quick else 10**6
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="invisible-bench-") as name:
        folder = Path(name)
        paths, features, test = _write_data(folder)
        columns = {"id": "int", "y": "int", **{f: "float" for f in features}}
        datasets = {p: {"train": LocalDataset(path, columns, dict(OPEN_POLICY))}
                    for p, path in paths.items()}
        layout = write_local_federation(folder / "federation", list(paths), datasets,
                                        limits={"rpc_timeout_s": 120.0})
        params = HorizontalLrParams(
            inputs={p: ColumnsRef("train", tuple(features), label="y") for p in paths},
            rounds=rounds, local_epochs=1, batch_size=1024, learning_rate=0.1)
        results = []
        with NodeProcesses(layout) as nodes, \
                Federation.from_config(layout.coordinator_config) as fed:
            fed.health(timeout_s=120)
            nodes.check_alive()
            ours = measure(lambda: results.append(fed.run(params)), REPEATS, warmup=1)
        model = results[-1].model
        x_test, y_test = test[features].to_numpy(float), test["y"].to_numpy()
        case = (f"default_credit_homo, 3 party nodes over mTLS, {rounds} rounds, 1 local epoch, "
                "batch 1024, lr 0.1")
        flower, why_not = {}, {}
        for mode, peer in (("plain", "flwr"), ("secagg", "flwr-secagg+")):
            outcome, note = _flower(_FLOWER_LR, [mode, str(folder), str(rounds), "1024", "0.1",
                                                 "0", ",".join(paths), str(runs)], quick)
            flower[peer], why_not[peer] = outcome, note
            theirs = None if outcome is None else timing_of(outcome["rounds_s"][warmup:])
            if outcome is not None and theirs is not None:
                note += (f"; its rounds {theirs.describe()}, its wall time with Ray's start "
                         f"{timing_of(outcome['wall_s'][warmup:]).median:.2f} s (median); ours/peer "
                         f"{ours.median / theirs.median:.3f}")
            rows.append(Row(case, "seconds", "lower", ours.median, peer,
                            None if theirs is None else theirs.median,
                            f"ours {ours.describe()}; {note}", timing=ours, peer_timing=theirs))
        auc = roc_auc_score(y_test, x_test @ model[:-1] + model[-1])
        data = []
        for party, path in paths.items():
            frame = pd.read_csv(path)
            data.append((party, frame[features].to_numpy(float), frame["y"].to_numpy(float)))
        plain = fedavg_plain(data, params.schedule()).model
        rows.append(Row(case, "auc", "higher", auc, "plaintext-fedavg",
                        roc_auc_score(y_test, x_test @ plain[:-1] + plain[-1]),
                        f"the same algorithm in float64; max |weight difference| "
                        f"{np.max(np.abs(model - plain)):.2e}"))
        pooled = LogisticRegression(max_iter=1000).fit(np.concatenate([x for _, x, _ in data]),
                                                       np.concatenate([y for _, _, y in data]))
        rows.append(Row(case, "auc", "higher", auc, "scikit-learn",
                        roc_auc_score(y_test, pooled.decision_function(x_test)),
                        "pooled, centralised LogisticRegression (lbfgs), on _test"))
        for peer, outcome in flower.items():
            rows.append(Row(case, "auc", "higher", auc, peer,
                            None if outcome is None else outcome["auc"],
                            "its final model on _test" if outcome
                            else f"did not run: {why_not[peer]}"))
        aggregation = _aggregation(folder, elements)
        vector, note = _flower(_FLOWER_VECTOR, [str(elements), str(REPEATS + 1)], quick)
        rounds_of = None if vector is None else timing_of(vector["round_s"])
        rows.append(Row(f"secure aggregation alone: one round of a {elements:.0e}-element "
                        "update, 3 parties", "ms/round", "lower", aggregation.median * 1000,
                        "flwr-secagg+", None if rounds_of is None else rounds_of.median * 1000,
                        "ours: masked all-to-all sum between 3 nodes of one process over gRPC "
                        f"and mTLS, slowest party, {aggregation.describe()}; {note}"
                        + ("" if rounds_of is None else f", its rounds {rounds_of.describe()}"),
                        timing=aggregation, peer_timing=rounds_of, scale=1000))
    return rows
