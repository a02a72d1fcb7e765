"""Benchmark `psi`: two party nodes over mTLS on loopback, n ids each, half of them shared.

Rows per size n (10^5, 10^6; --quick: 10^4, 10^5):
- `seconds` (end to end, `Federation.psi` call to result, lower is better) and
  `ids/s/side`, against each peer run in the same run on the same sets
  (ids "user-000000000042"; party A holds 0..n-1, party B n/2..3n/2-1):
  - `openmined-psi`: OpenMined PSI 2.0.6 in one process, as its API allows
    (server setup, client request, server response, client intersection),
    in a venv of its own; not run at 10^6 (it takes minutes at 10^5 x 10);
  - `spu-ecdh` and `spu-rr22`: SecretFlow's PSI inside the `spu` 0.9.5 wheel
    (`spu.psi`), two processes over brpc on loopback, in the SPU venv. Its
    ECDH maps an id's hash straight to a Curve25519 coordinate (no
    hash-to-group, multi-buffer X25519); RR22 is OT-based, not ECDH;
  - `compute-limit`: the time the ristretto255 operations alone take at this
    machine's single-operation rates, measured in this run: hash-to-group
    plus two exponentiations per id per side, both sides on every core.
Every timing is the median of five runs after a warm-up (ours at the second
size: after the first size's runs on the same nodes), with its quartiles;
--quick runs each peer once (each run starts processes).
- `MB` at 10^6 (--quick: 10^5): the peak resident memory (VmHWM) of each node
  process, which loaded both sizes' tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import textwrap
from pathlib import Path

import rbcl

from invisible.benchmarking import Row, Timing, measure, run_peer, timing_of
from invisible.coordinator.federation import Federation
from invisible.coordinator.local import OPEN_POLICY, LocalDataset, NodeProcesses, write_local_federation

PARTIES = ("bank", "telco")
FULL_SIZES = (10**5, 10**6)
QUICK_SIZES = (10**4, 10**5)
OPENMINED_MAX = 10**5
_PEER_TIMEOUT_S = 1800
#: Timed runs of ours and of every peer, each after a warm-up (see `run`).
REPEATS = 5


def _ids(start: int, n: int) -> list[str]:
    return [f"user-{i:012d}" for i in range(start, start + n)]


def _write_sets(folder: Path, sizes: tuple[int, ...]) -> dict[str, dict[str, LocalDataset]]:
    datasets: dict[str, dict[str, LocalDataset]] = {p: {} for p in PARTIES}
    for n in sizes:
        for party, start in zip(PARTIES, (0, n // 2), strict=True):
            path = folder / f"{party}_{n}.csv"
            path.write_text("id\n" + "\n".join(_ids(start, n)) + "\n")
            datasets[party][f"ids{n}"] = LocalDataset(path, {"id": "str"},
                                                      {**OPEN_POLICY, "min_rows": 1})
    return datasets


def _rates(samples: int = 2000) -> tuple[float, float]:
    """Hash-to-group and exponentiations per second on one core (rbcl, this machine): the
    medians of REPEATS runs over `samples` after a warm-up."""
    digests = [hashlib.sha512(b"%d" % i).digest() for i in range(samples)]
    points = [rbcl.crypto_core_ristretto255_from_hash(d) for d in digests]
    scalar = rbcl.crypto_core_ristretto255_scalar_random()
    hashing = measure(lambda: [rbcl.crypto_core_ristretto255_from_hash(d) for d in digests],
                      REPEATS)
    powers = measure(lambda: [rbcl.crypto_scalarmult_ristretto255(scalar, p) for p in points],
                     REPEATS)
    return samples / hashing.median, samples / powers.median


def _compute_limit(n: int, hashing: float, exponentiation: float) -> float:
    per_side = n / hashing + 2 * n / exponentiation  # one core
    return 2 * per_side / (os.cpu_count() or 1)


_OPENMINED = textwrap.dedent("""
    import json, sys, time
    import private_set_intersection.python as psi
    n, runs = int(sys.argv[1]), int(sys.argv[2])
    server_items = [f"user-{i:012d}" for i in range(n)]
    client_items = [f"user-{i:012d}" for i in range(n // 2, n // 2 + n)]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        server = psi.server.CreateWithNewKey(True)
        client = psi.client.CreateWithNewKey(True)
        setup = server.CreateSetupMessage(1e-9, n, server_items, psi.DataStructure.RAW)
        request = client.CreateRequest(client_items)
        response = server.ProcessRequest(request)
        common = client.GetIntersection(setup, response)
        times.append(time.perf_counter() - started)
    print(json.dumps({"times": times, "common": len(common)}))
""")

_SPU = textwrap.dedent("""
    import json, multiprocessing as mp, os, sys, time
    import spu.libspu as libspu
    from spu import psi

    def party(rank, protocol, inputs, out, port, queue):
        desc = libspu.link.Desc()
        desc.id = f"psi-{port}"
        desc.recv_timeout_ms = 3600 * 1000
        desc.add_party("alice", f"127.0.0.1:{port}")
        desc.add_party("bob", f"127.0.0.1:{port + 1}")
        link = libspu.link.create_brpc(desc, rank)
        config = psi.PsiExecuteConfig(
            protocol_conf=psi.PsiProtocolConfig(
                protocol=getattr(psi.PsiProtocol, protocol), receiver_rank=0,
                broadcast_result=False,
                ecdh_params=psi.EcdhParams(curve=psi.EllipticCurveType.CURVE_25519)),
            input_params=psi.InputParams(type=psi.SourceType.SOURCE_TYPE_FILE_CSV, path=inputs,
                                         selected_keys=["id"], keys_unique=True),
            output_params=psi.OutputParams(type=psi.SourceType.SOURCE_TYPE_FILE_CSV, path=out,
                                           disable_alignment=True))
        report = psi.psi_execute(config, link)
        queue.put(report.intersection_count)
        link.stop_link()

    if __name__ == "__main__":
        protocol, a, b, folder, port, runs = sys.argv[1:7]
        times = []
        for run in range(int(runs)):
            queue = mp.Queue()
            started = time.perf_counter()
            procs = [mp.Process(target=party, args=(r, protocol, [a, b][r],
                                                    os.path.join(folder, f"out{r}.csv"),
                                                    int(port) + 2 * run, queue))
                     for r in range(2)]
            [p.start() for p in procs]
            [p.join() for p in procs]
            if any(p.exitcode for p in procs):
                sys.exit("a party failed")
            counts = [queue.get() for _ in procs]  # the party not the receiver says -1
            times.append(time.perf_counter() - started)
        print(json.dumps({"times": times, "common": max(counts)}))
""")


def _peer(name: str, requirements: list[str], script: str, args: list[str], quick: bool,
          ) -> tuple[Timing | None, str]:
    """The seconds a peer took (its own clock, around the whole protocol: REPEATS runs after
    a warm-up; --quick: one run, as each starts processes), or why none."""
    runs, warmup = (1, 0) if quick else (REPEATS + 1, 1)
    lines = run_peer(name, requirements, script, [*args, str(runs)], not quick,
                     _PEER_TIMEOUT_S)
    if isinstance(lines, str):
        return None, lines
    try:  # the last line is ours (a peer may log to stdout before it)
        printed = json.loads(lines[-1])
        times = [float(t) for t in printed["times"]][warmup:]
        timing, common = timing_of(times), printed["common"]
    except (IndexError, ValueError, KeyError, TypeError):
        return None, f"{name} printed no timing"
    return timing, f"{name}: {timing.describe()}, {common} in common"


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(quick: bool) -> list[Row]:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    hashing, exponentiation = _rates()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="invisible-bench-") as name:
        folder = Path(name)
        datasets = _write_sets(folder, sizes)
        layout = write_local_federation(folder / "federation", PARTIES, datasets,
                                        limits={"rpc_timeout_s": 600.0,
                                                "job_timeout_s": 3600.0})
        with NodeProcesses(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
            fed.health(timeout_s=120)
            for n in sizes:
                inputs = {p: (f"ids{n}", "id") for p in PARTIES}
                sizes_seen: list[int | None] = []

                def intersect(inputs: dict = inputs, seen: list = sizes_seen) -> None:
                    seen.append(fed.psi(inputs, release_size=True, timeout_s=3600).size)

                # The nodes are warm at the second size (the first size's runs warmed them).
                ours = measure(intersect, REPEATS, warmup=1 if n == sizes[0] else 0)
                assert set(sizes_seen) == {n // 2}, sizes_seen
                case = f"n={n:.0e} ids per side, half shared, 2 party nodes, mTLS loopback"
                limit = _compute_limit(n, hashing, exponentiation)
                rows.append(Row(case, "seconds", "lower", ours.median, "compute-limit", limit,
                                f"ours {ours.describe()}; limit from {hashing:,.0f} "
                                f"hash-to-group/s and {exponentiation:,.0f} exponentiations/s on "
                                f"one core (rbcl), {os.cpu_count()} cores; ours/limit "
                                f"{ours.median / limit:.2f}", timing=ours))
                sets = [str(datasets[p][f"ids{n}"].path) for p in PARTIES]
                if n <= OPENMINED_MAX:
                    om, om_note = _peer("openmined-psi", ["openmined-psi==2.0.6"], _OPENMINED,
                                        [str(n)], quick)
                else:
                    om, om_note = None, (f"openmined-psi not run at n={n:.0e}: one process, "
                                         f"it took about 30 s at {OPENMINED_MAX:.0e} ids here "
                                         "and grows linearly (several minutes)")
                rows.append(Row(case, "seconds", "lower", ours.median, "openmined-psi",
                                om.median if om else None, om_note, timing=ours,
                                peer_timing=om))
                for offset, (peer, protocol) in enumerate((("spu-ecdh", "PROTOCOL_ECDH"),
                                                           ("spu-rr22", "PROTOCOL_RR22"))):
                    port = 23000 + n % 997 + 20 * offset
                    spu, note = _peer("spu", ["spu==0.9.5"], _SPU,
                                      [protocol, *sets, str(folder), str(port)], quick)
                    if peer == "spu-ecdh":
                        note += "; its ECDH maps an id's hash straight to a Curve25519 coordinate"
                    rows.append(Row(case, "seconds", "lower", ours.median, peer,
                                    spu.median if spu else None, note, timing=ours,
                                    peer_timing=spu))
                rows.append(Row(case, "ids/s/side", "higher", n / ours.median, "compute-limit",
                                n / limit, "n / seconds", timing=ours, per=n))
            peak = max(sizes)
            for party, process in nodes.processes.items():
                rows.append(Row(f"peak memory of node '{party}' after n={peak:.0e}", "MB",
                                "lower", _peak_mb(process.pid),
                                note="VmHWM; the node loaded both sizes' tables"))
    return rows
