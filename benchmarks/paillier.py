"""Benchmark `paillier`: our engine against naive `phe` and SecretFlow's HEU, same run.

Rows:
- `encryptions/s`, single values (phe-compatible, unpacked): ours = DJN
  obfuscators from a fixed-base table, made by a pool of worker processes on
  all cores, timed from an empty pool (spawning the workers and building
  their tables counts); peers `phe` (`PublicKey.encrypt` per value) and
  `heu` (`sf-heu` ZPaillier 2048-bit, `Encryptor.encrypt` per value).
- `values/s`, end to end: a Paillier secure sum of n float values from each
  of 3 parties (n = 10^5; --quick 10^4), three node processes over mTLS on
  loopback, from the request to the decoded total. Peers do the same sum
  naively on one core — encrypt every value of the three parties, add, decrypt
  — on a slice of the data (10^4 values; --quick 10^3), scaled per value.
- `bytes/value`: payload bytes on the wire per summed value (all parties).

The note of the end-to-end row gives the limit on this machine: per
ciphertext one obfuscator and one CRT decryption, divided by the slots per
ciphertext, over the cores.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from invisible.benchmarking import Row, Timing, measure
from invisible.coordinator.federation import Federation
from invisible.coordinator.local import OPEN_POLICY, LocalDataset, NodeProcesses, write_local_federation
from invisible.crypto.paillier.djn import FixedBaseTable, ObfuscatorPool
from invisible.crypto.paillier.interop import encrypt_numbers
from invisible.crypto.paillier.keys import generate_keypair, random_below
from invisible.crypto.paillier.packing import Packing
from invisible.crypto.prg import Prg

PARTIES = ("bank", "hospital", "telco")
#: Every timed value is the median of this many runs after a warm-up (the contract).
REPEATS = 5
BOUND = 1000.0
FRACTIONAL_BITS = 16


def _heu() -> tuple[object, object, object, object] | str:
    try:
        from heu import phe as heu_phe
    except ImportError as exc:  # the `bench` extra installs sf-heu
        return f"sf-heu not installed ({exc})"
    kit = heu_phe.setup(heu_phe.SchemaType.ZPaillier, 2048)
    return (kit.encryptor(), kit.decryptor(), kit.evaluator(), kit.float_encoder(scale=2**20))


def _single_values(count: int, slice_size: int, heu: tuple | str) -> list[Row]:
    values = np.random.default_rng(1).uniform(-BOUND, BOUND, count).tolist()
    public, _ = generate_keypair(Prg.from_os())

    def encrypt_all() -> None:
        with ObfuscatorPool(public) as pool:
            encrypt_numbers(public, values, pool)

    timing = measure(encrypt_all, REPEATS, warmup=1)
    ours = count / timing.median
    case = f"{count:,} single values, 2048-bit key, from an empty pool"
    naive = measure(lambda: [public.phe_key.encrypt(v) for v in values[:slice_size]], REPEATS)
    rows = [Row(case, "encryptions/s", "higher", ours, "phe", slice_size / naive.median,
                f"ours: {os.cpu_count()} workers, DJN fixed base, {timing.describe()}; phe on "
                f"{slice_size} values, one core, {naive.describe()}", timing=timing, per=count,
                peer_timing=naive, peer_per=slice_size)]
    if isinstance(heu, str):
        rows.append(Row(case, "encryptions/s", "higher", ours, "heu", None, f"heu: {heu}",
                        timing=timing, per=count))
    else:
        encryptor, _, _, encoder = heu
        theirs = measure(lambda: [encryptor.encrypt(encoder.encode(v))
                                  for v in values[:slice_size]], REPEATS)
        rows.append(Row(case, "encryptions/s", "higher", ours, "heu", slice_size / theirs.median,
                        f"heu ZPaillier per value on {slice_size} values, one core, "
                        f"{theirs.describe()}", timing=timing, per=count, peer_timing=theirs,
                        peer_per=slice_size))
    return rows


def _naive_sum(slice_size: int, heu: tuple | str, vectors: list[np.ndarray],
               ) -> tuple[Timing, Timing | str]:
    """The time of encrypt-all, add, decrypt of a slice of each party's values, value by
    value, by phe and by HEU (or why HEU did not run)."""
    from phe import paillier

    public, private = paillier.generate_paillier_keypair(n_length=2048)
    parts = [v[:slice_size].tolist() for v in vectors]

    def by_phe() -> None:
        encrypted = [[public.encrypt(x) for x in part] for part in parts]
        sums = [a + b + c for a, b, c in zip(*encrypted, strict=True)]
        [private.decrypt(s) for s in sums]

    phe_timing = measure(by_phe, REPEATS)
    if isinstance(heu, str):
        return phe_timing, heu
    encryptor, decryptor, evaluator, encoder = heu

    def by_heu() -> None:
        encrypted = [[encryptor.encrypt(encoder.encode(x)) for x in part] for part in parts]
        sums = [evaluator.add(evaluator.add(a, b), c) for a, b, c in zip(*encrypted, strict=True)]
        [encoder.decode(decryptor.decrypt(s)) for s in sums]

    return phe_timing, measure(by_heu, REPEATS)


def _limit(bias: int) -> tuple[float, int, float, float]:
    """Values/s one core could reach: (obfuscator + CRT decryption) per ciphertext / slots."""
    public, private = generate_keypair(Prg.from_os())
    table = FixedBaseTable(public.hs, public.nsquare, public.exponent_bits)
    rng = Prg.from_os()
    exponents = [random_below(rng, 1 << public.exponent_bits) for _ in range(50)]
    obfuscate = measure(lambda: [table.power(a) for a in exponents], REPEATS).median / 50
    ciphertexts = [table.power(a) for a in exponents[:20]]
    decrypt = measure(lambda: [private.decrypt_raw(c) for c in ciphertexts], REPEATS).median / 20
    slots = Packing.plan(public.bits, bias, len(PARTIES) - 1).slots
    return slots / (obfuscate + decrypt), slots, obfuscate, decrypt


def run(quick: bool) -> list[Row]:
    # The naive peers run on a slice of 1,002 values in all (--quick: 102), a third per party:
    # value by value, their rate does not depend on the count, and six runs of 10^4 values
    # took phe 9 minutes.
    count, values_per_party, slice_size = ((2_000, 10_000, 34) if quick
                                           else (20_000, 100_000, 334))
    heu = _heu()
    rows = _single_values(count, 3 * slice_size, heu)
    rng = np.random.default_rng(2)  # benchmark data, not secret
    vectors = [rng.uniform(-BOUND, BOUND, values_per_party) for _ in PARTIES]
    with tempfile.TemporaryDirectory(prefix="invisible-bench-") as folder:
        datasets = {}
        for party, vector in zip(PARTIES, vectors, strict=True):
            path = Path(folder) / f"{party}.csv"
            np.savetxt(path, vector, fmt="%.4f", header="w", comments="")
            datasets[party] = {"v": LocalDataset(path, {"w": "float"},
                                                 {**OPEN_POLICY, "min_rows": 1})}
        layout = write_local_federation(Path(folder) / "federation", PARTIES, datasets,
                                        limits={"rpc_timeout_s": 300.0})
        inputs = {p: ("v", "w") for p in PARTIES}
        with NodeProcesses(layout), Federation.from_config(layout.coordinator_config) as fed:
            fed.health(timeout_s=120)
            results = []
            timing = measure(lambda: results.append(fed.paillier_sum(
                inputs, BOUND, key_holder="telco", elementwise=True, length=values_per_party,
                fractional_bits=FRACTIONAL_BITS)), REPEATS, warmup=1)
    total = results[-1]
    expected = np.sum(vectors, axis=0)
    if total.total is None or np.max(np.abs(total.total - expected)) > 1e-3:
        raise RuntimeError("the Paillier sum disagrees with numpy")
    summed_values = 3 * values_per_party
    ours = summed_values / timing.median
    phe_timing, heu_timing = _naive_sum(slice_size, heu, vectors)
    naive_values = 3 * slice_size
    bias = int(BOUND * 2**FRACTIONAL_BITS)
    limit, slots, obfuscate, decrypt = _limit(bias)
    cores = os.cpu_count() or 1
    case = f"sum of {values_per_party:,} values x 3 parties, 3 nodes over mTLS"
    limit_note = (f"limit: {slots} slots/ciphertext, obfuscator {obfuscate * 1000:.2f} ms + CRT "
                  f"decryption {decrypt * 1000:.2f} ms per ciphertext = {limit:,.0f} values/s "
                  f"per core, {limit * cores:,.0f} on {cores} cores; ours {timing.describe()}")
    rows.append(Row(case, "values/s", "higher", ours, "phe", naive_values / phe_timing.median,
                    f"phe: encrypt, add, decrypt per value on a {naive_values:,}-value slice "
                    f"({slice_size:,} a party), scaled per value, {phe_timing.describe()}; "
                    f"{limit_note}", timing=timing, per=summed_values, peer_timing=phe_timing,
                    peer_per=naive_values))
    if isinstance(heu_timing, str):
        rows.append(Row(case, "values/s", "higher", ours, "heu", None, f"heu: {heu_timing}",
                        timing=timing, per=summed_values))
    else:
        rows.append(Row(case, "values/s", "higher", ours, "heu",
                        naive_values / heu_timing.median,
                        f"heu per value, no packing, on the same {naive_values:,}-value slice, "
                        f"{heu_timing.describe()}", timing=timing, per=summed_values,
                        peer_timing=heu_timing, peer_per=naive_values))
    wire = sum(r.bytes_sent + r.bytes_released for r in total.records.values())
    rows.append(Row(case, "bytes/value", "lower", wire / summed_values,
                    note="payload: public key, 2 ciphertext vectors to the aggregator and the "
                         "re-randomised sum to the key holder, the decoded total released"))
    return rows
