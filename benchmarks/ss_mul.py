"""Benchmark `ss_mul`: fixed-point products of shared vectors, with truncation and a dealer.

Rows (n = 10^6; --quick 10^5), 3 computing parties:
- `mults/s`, one process over the in-process channel: input sharing of x and
  y, the product with exact truncation (dealer thread generating and sending
  the tuples included), and opening the result to all — the same steps the
  peer's timing covers. Peer `spu`: SecretFlow SPU's simulator, SEMI2K (the
  trusted-dealer protocol, like ours), 3 parties, FM64, `x * y` on floats
  (fixed point), timed around `sim_jax` (sharing, product, reveal), in its
  own venv because SPU pins numpy < 2.
- `mults/s` with 3 party node processes and a dealer node over mTLS on
  loopback, timed by the parties (slowest party): peer `spu` again, against
  the same steps as in process (`kinds.mul_benchmark.product_program`, tuples
  included); peer `bandwidth-limit` = the channel's raw bytes/s (a
  `bandwidth` job in the same run) divided by the bytes each party sends
  per product, against the product alone.
- `mults/s`, peer `mpyc`: MPyC secure fixed-point arrays (secfxp, 3 real
  processes on 127.0.0.1), the largest size that finished within two
  minutes, against ours over mTLS at the same size.
- `bytes/mult/party`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from invisible.benchmarking import Row, Timing, measure, peer_python, timing_of
from invisible.coordinator.federation import Federation
from invisible.coordinator.local import NodeProcesses, write_local_federation
from invisible.crypto.fixedpoint import decode
from invisible.crypto.prg import Prg
from invisible.kinds.mul_benchmark import BENCHMARK_BOUND, MulBenchmarkParams, product_program
from invisible.net.inprocess import InProcessHub
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.dealer import run_dealer
from invisible.protocols.mpc.provider import DealerProvider

FRACTIONAL_BITS = 16
#: The most a product on shares may differ from float64: each input is rounded to 2^-17 and
#: the product truncated to 1 ulp, so |error| <= (|x| + |y|) 2^-17 + 2^-16.
MAX_ERROR = 2 * BENCHMARK_BOUND * 2.0**-17 + 2.0**-15
PARTIES = ("bank", "hospital", "telco")
BOUND = BENCHMARK_BOUND

SPU_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import spu.libspu as libspu
    import spu.utils.simulation as spsim
    n, repeats = int(sys.argv[1]), int(sys.argv[2])
    sim = spsim.Simulator.simple(3, libspu.ProtocolKind.SEMI2K, libspu.FieldType.FM64)
    x = np.random.default_rng(0).uniform(-100, 100, n)
    y = np.random.default_rng(1).uniform(-100, 100, n)
    product = spsim.sim_jax(sim, lambda a, b: a * b)
    product(x, y)
    times = []
    for _ in range(repeats):
        started = time.perf_counter(); z = product(x, y); times.append(time.perf_counter() - started)
    print(json.dumps({"times": times, "error": float(np.max(np.abs(z - x * y)))}))
""")

MPYC_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from mpyc.runtime import mpc
    n, repeats = int(sys.argv[1]), int(sys.argv[2])
    secfxp = mpc.SecFxp(64, 16)
    async def main():
        await mpc.start()
        x = np.random.default_rng(0).uniform(-100, 100, n)
        y = np.random.default_rng(1).uniform(-100, 100, n)
        # integral=False at every party: MPyC infers integrality from the local values, and
        # parties that disagree on it (zeros are integral) wait for each other forever.
        mine = secfxp.array({0: x, 1: y}.get(mpc.pid, np.zeros(n)), integral=False)
        times = []
        for _ in range(repeats + 1):  # the first is the warm-up
            started = time.perf_counter()
            a = mpc.input(mine, senders=0)
            b = mpc.input(mine, senders=1)
            z = await mpc.output(a * b)
            times.append(time.perf_counter() - started)
        await mpc.shutdown()
        if mpc.pid == 0:
            error = float(np.max(np.abs(np.asarray(z, dtype=float) - x * y)))
            print(json.dumps({"times": times[1:], "error": error}))
    mpc.run(main())
""")



def _inprocess_once(x: np.ndarray, y: np.ndarray, opened: list[np.ndarray] | None = None,
                    ) -> None:
    """One run of the program in one process; the first party's opened product goes into
    `opened` (checked against x * y in float64)."""
    names = [*PARTIES, "dealer"]
    hub = InProcessHub(names, timeout_s=120)
    channels = hub.channels(f"ss-mul-{time.perf_counter_ns()}")
    errors: list[BaseException] = []

    def party(name: str) -> None:
        try:
            ctx = MpcContext(channels[name], PARTIES, "dealer")
            provider = DealerProvider(channels[name], PARTIES, "dealer")
            product, _, _ = product_program(ctx, provider, x if ctx.index == 0 else None,
                                            y if ctx.index == 1 else None, x.shape,
                                            Prg.from_os())
            provider.close()
            if opened is not None and ctx.index == 0:
                opened.append(product)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=party, args=(p,)) for p in PARTIES]
    threads.append(threading.Thread(target=run_dealer,
                                    args=(channels["dealer"], PARTIES, Prg.from_os())))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    if errors:
        raise errors[0]


def _spu(n: int, repeats: int, quick: bool) -> tuple[float | None, str, Timing | None]:
    """SPU's mults/s (the median of `repeats` timed runs after a warm-up), a note, and the
    timing; or no rate and why."""
    python = peer_python("spu", ["spu==0.9.5"], create=not quick)
    if isinstance(python, str):
        return None, f"spu: {python}", None
    done = subprocess.run([str(python), "-c", SPU_SCRIPT, str(n), str(repeats)],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return None, f"spu failed: {done.stderr.strip().splitlines()[-1:]}", None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    timing = timing_of(result["times"])
    return n / timing.median, (f"spu SEMI2K 3 parties FM64, sim_jax(x * y), "
                               f"{timing.describe()}, max error {result['error']:.1e}"), timing


def _mpyc(limit_s: float, repeats: int) -> tuple[int, Timing, float] | str:
    """(size, timing, max error) of the largest size at which MPyC finished a warm-up and
    `repeats` timed runs within `limit_s`, or why none."""
    try:
        import mpyc  # noqa: F401
    except ImportError:
        return "mpyc not installed (the bench extra)"
    best: tuple[int, Timing, float] | str = "mpyc did not finish its smallest size"
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "mpyc_mul.py"
        script.write_text(MPYC_SCRIPT)
        sizes = (10**3, 10**4, 10**5, 2 * 10**5, 5 * 10**5, 10**6)
        for n, following in zip(sizes, (*sizes[1:], 0), strict=True):
            started = time.perf_counter()
            processes = [subprocess.Popen(
                [sys.executable, str(script), str(n), str(repeats), "-M3", f"-I{i}",
                 "--no-log"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                for i in range(3)]
            try:
                output, _ = processes[0].communicate(timeout=limit_s)
                for process in processes[1:]:
                    process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                break
            finally:
                for process in processes:
                    if process.poll() is None:
                        process.kill()
                        process.wait()
            try:
                result = json.loads(output.strip().splitlines()[-1])
                best = (n, timing_of(result["times"]), float(result["error"]))
            except (ValueError, IndexError, KeyError):
                break
            if (time.perf_counter() - started) * following / n > limit_s:
                break  # the next size would not finish in time
    return best


@dataclass
class GrpcRun:
    """Per size, mults/s of the whole program and of the product alone; the raw channel's
    bytes/s; the bytes each party sends per product."""

    program: dict[int, Timing]
    product: dict[int, Timing]
    raw: Timing
    raw_bytes: int
    bytes_per_mult: float

    @property
    def raw_bytes_per_s(self) -> float:
        return self.raw_bytes / self.raw.median


def _over_grpc(sizes: list[int], repeats: int) -> GrpcRun:
    with tempfile.TemporaryDirectory(prefix="invisible-bench-") as folder:
        layout = write_local_federation(Path(folder), PARTIES, dealers=["dealer"],
                                        limits={"rpc_timeout_s": 300.0})
        program_timings, product_timings = {}, {}
        with NodeProcesses(layout), Federation.from_config(layout.coordinator_config) as fed:
            fed.health(timeout_s=120)
            job_parties = (*PARTIES, "dealer")
            for n in sizes:
                program, product, sent = [], [], []
                for _ in range(repeats + 1):
                    result = fed.run(MulBenchmarkParams(elements=n, dealer="dealer"),
                                     job_parties, timeout_s=600)
                    # the slowest party
                    program.append(max(result.seconds_by_party[p] for p in PARTIES))
                    product.append(max(result.product_seconds[p] for p in PARTIES))
                    sent = [result.product_bytes_sent[p] for p in PARTIES]
                program_timings[n] = timing_of(program[1:])
                product_timings[n] = timing_of(product[1:])
                bytes_per_mult = float(np.mean(sent)) / n
            largest = max(sizes)
            raw = []
            for _ in range(repeats + 1):
                raw.append(fed.bandwidth("bank", "hospital", largest).send_seconds)
    return GrpcRun(program_timings, product_timings, timing_of(raw[1:]), 8 * largest,
                   bytes_per_mult)


def run(quick: bool) -> list[Row]:
    n = 10**5 if quick else 10**6
    repeats = 5 if quick else 9
    data = np.random.default_rng(0)  # benchmark inputs, made before the clock starts
    x, y = data.uniform(-BOUND, BOUND, n), data.uniform(-BOUND, BOUND, n)
    inprocess = measure(lambda: _inprocess_once(x, y), repeats)
    opened: list[np.ndarray] = []
    _inprocess_once(x, y, opened)  # against the plaintext answer, as the peers report theirs
    error = float(np.max(np.abs(decode(opened[0], FRACTIONAL_BITS) - x * y)))
    if error > MAX_ERROR:
        raise RuntimeError(f"the products on shares are off by {error:.2e} (over {MAX_ERROR})")
    spu_rate, spu_note, spu_timing = _spu(n, repeats, quick)
    mpyc = _mpyc(20.0 if quick else 120.0, repeats)
    sizes = sorted({n, mpyc[0]} if isinstance(mpyc, tuple) else {n})
    grpc = _over_grpc(sizes, repeats)
    per_party = grpc.bytes_per_mult
    case_in = f"n={n:.0e}, 3 parties + dealer, in one process"
    case_grpc = f"n={n:.0e}, 3 party nodes + dealer node, mTLS loopback"
    steps = "share x and y, product with exact truncation, open to all"
    rows = [
        Row(case_in, "mults/s", "higher", n / inprocess.median, "spu", spu_rate,
            f"ours: {steps}; {inprocess.describe()}; max error {error:.1e} against float64; "
            + spu_note, timing=inprocess, peer_timing=spu_timing, per=n),
        Row(case_grpc, "mults/s", "higher", n / grpc.program[n].median, "spu", spu_rate,
            f"ours: {steps} (dealer tuples included), slowest party; " + spu_note,
            timing=grpc.program[n], peer_timing=spu_timing, per=n),
        # The limit is a rate of products: the raw bytes/s over the bytes one product sends.
        Row(case_grpc, "mults/s", "higher", n / grpc.product[n].median, "bandwidth-limit",
            grpc.raw_bytes_per_s / per_party,
            f"ours: the product alone; raw {grpc.raw_bytes_per_s / 1e6:.0f} MB/s node to node "
            f"/ {per_party:.1f} bytes/mult/party", timing=grpc.product[n], per=n,
            peer_timing=grpc.raw, peer_per=grpc.raw_bytes / per_party),
    ]
    if isinstance(mpyc, tuple):
        size, timing, error = mpyc
        rows.append(Row(f"n={size:.0e}, 3 processes/nodes on 127.0.0.1", "mults/s", "higher",
                        size / grpc.program[size].median, "mpyc", size / timing.median,
                        f"mpyc 0.11 secfxp(64, 16) arrays, 3 processes, the same steps (input x "
                        f"and y, product, output), largest size whose warm-up and {repeats} "
                        f"runs finished within the time limit ({timing.describe()}, max error "
                        f"{error:.1e}); ours over mTLS at the same size",
                        timing=grpc.program[size], peer_timing=timing, per=size))
    else:
        rows.append(Row("3 processes/nodes on 127.0.0.1", "mults/s", "higher",
                        n / grpc.program[n].median,
                        "mpyc", None, f"mpyc: {mpyc}", timing=grpc.program[n], per=n))
    rows.append(Row(case_grpc, "bytes/mult/party", "lower", per_party,
                    note="payload of the product: Beaver differences (2 x 8 B to each peer) "
                         "and the masked truncation input (8 B to each peer)"))
    return rows


if __name__ == "__main__":  # a quick look without the CLI
    print(json.dumps([r.to_json() for r in run(quick=True)], indent=1))
