"""Plant known bugs in the security checks one at a time and show which tests kill them.

Each mutant is a small, plausible bug (issue 17's list, and the ones a review found
later): the script edits the source in place, runs the tests that should catch it,
restores the file whatever happens, and prints a table: killed (a test failed) or
survived. A survivor is a gap in the tests. Run from the repository root:

    .venv/bin/python scripts/plant.py [NAME ...]
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    before: str
    after: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant("k-threshold < becomes <=", "src/invisible/metering/policy.py",
           "request.smallest_cell < policy.min_rows", "request.smallest_cell <= policy.min_rows",
           ("tests/test_security_checks.py", "tests/test_metering.py")),
    Mutant("a requester's rows quota leaves out the request's rows",
           "src/invisible/metering/policy.py",
           "(rule.rows_per_day, by_requester[1] + request.rows,",
           "(rule.rows_per_day, by_requester[1],",
           ("tests/test_security_checks.py", "tests/test_metering.py")),
    Mutant("a dataset's rows quota leaves out the request's rows",
           "src/invisible/metering/policy.py",
           "(policy.rows_per_day, overall[1] + request.rows,",
           "(policy.rows_per_day, overall[1],",
           ("tests/test_security_checks.py", "tests/test_metering.py")),
    Mutant("the hash-chain link check removed", "src/invisible/metering/verify.py",
           "        if row[10] != prev_hash:\n", "        if False:\n",
           ("tests/test_security_checks.py", "tests/test_metering.py")),
    Mutant("only the first ciphertext of a vector validated",
           "src/invisible/crypto/paillier/vector.py",
           "    for c in ciphertexts:\n", "    for c in ciphertexts[:1]:\n",
           ("tests/test_security_checks.py", "tests/test_paillier.py")),
    Mutant("the aggregator skips re-randomisation", "src/invisible/protocols/paillier_sum.py",
           "total = cipher.rerandomise(cipher.add([mine, *others]), pool)",
           "total = cipher.add([mine, *others])",
           ("tests/test_security_checks.py", "tests/test_paillier.py")),
    Mutant("the DJN obfuscator exponent cut to a quarter", "src/invisible/crypto/paillier/keys.py",
           "EXPONENT_BITS_FRACTION = 2\n", "EXPONENT_BITS_FRACTION = 8\n",
           ("tests/test_security_checks.py", "tests/test_paillier.py")),
    Mutant("Prg's repr shows its key as hex", "src/invisible/crypto/prg.py",
           '        return "Prg(<key hidden>)"\n', '        return f"Prg({self._key.hex()})"\n',
           ("tests/test_security_checks.py", "tests/test_crypto.py")),
    Mutant("a weight's within-epoch bound without fixed point's slack",
           "src/invisible/protocols/mpc/logistic.py",
           "return steps * (schedule.learning_rate * (feature_bound + ulp) + 4 * ulp)",
           "return steps * schedule.learning_rate * feature_bound",
           ("tests/test_vertical_lr.py::"
            "test_a_weight_moved_to_the_edge_of_its_planned_bound_is_still_clipped_exactly",)),
    Mutant("evaluate's threshold not on its grid", "src/invisible/kinds/vertical_evaluate.py",
           "        if round(self.threshold * 10) != self.threshold * 10:\n",
           "        if False:\n", ("tests/test_vertical_evaluate.py",)),
)


def run(mutant: Mutant) -> tuple[bool, float, str]:
    """(killed, seconds, the first failing test) for one mutant."""
    path = ROOT / mutant.path
    original = path.read_text()
    if original.count(mutant.before) != 1:
        raise SystemExit(f"{mutant.name}: the code to mutate is not in {mutant.path} once")
    started = time.monotonic()
    try:
        path.write_text(original.replace(mutant.before, mutant.after))
        done = subprocess.run([*PYTEST, *mutant.tests], cwd=ROOT, capture_output=True,
                              text=True, timeout=900)
    finally:
        path.write_text(original)
    failed = next((line.split(" ")[1] for line in done.stdout.splitlines()
                   if line.startswith("FAILED ")), "")
    return done.returncode != 0, time.monotonic() - started, failed


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or any(n in m.name for n in names)]
    survivors = 0
    print("| mutant | where | result | killed by |\n| --- | --- | --- | --- |")
    for mutant in chosen:
        killed, seconds, test = run(mutant)
        survivors += not killed
        print(f"| {mutant.name} | `{mutant.path}` | "
              f"{'killed' if killed else '**survived**'} ({seconds:.0f} s) | `{test}` |",
              flush=True)
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
