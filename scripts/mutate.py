"""`make mutate`: mutation testing of the security checks, with mutmut.

The modules and the tests that guard them are in pyproject.toml's [tool.mutmut]. mutmut
copies the sources to mutants/, makes every small change it knows to each function
(operators, comparisons, constants, strings, removed calls), runs the tests that cover the
function against each, and keeps the results. This prints the totals and every mutant
that survived (no test failed), grouped by module, with how long the run took; a
survivor is either a gap in the tests or an equivalent change, which is listed in
scripts/equivalent_mutants.txt with the reason it cannot be killed (`mutmut show NAME`
prints one's diff).

Each run starts afresh: mutmut keeps its results and which tests cover which function in
mutants/, and reuses them for functions whose code did not change, so tests added or
changed since (a new test reaching an old function) would not be counted, and results
could be stale either way. `--resume` reuses them (quicker while writing a test for a
survivor; never for the run whose survivors are reported).

    .venv/bin/python scripts/mutate.py [--resume] [MUTANT-NAME-PATTERN ...]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = Path(sys.executable).parent / "mutmut"
EQUIVALENT = ROOT / "scripts" / "equivalent_mutants.txt"


def equivalent() -> dict[str, str]:
    """Mutants that cannot be killed, with why: `name  reason` lines, # for comments."""
    if not EQUIVALENT.exists():
        return {}
    known = {}
    for line in EQUIVALENT.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition(" ")
            known[name] = reason.strip()
    return known


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resume", action="store_true",
                        help="reuse mutants/ from the last run instead of starting afresh")
    parser.add_argument("names", nargs="*", help="only these mutants (fnmatch patterns)")
    args = parser.parse_args()
    if not args.resume:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    started = time.monotonic()
    run = subprocess.run([str(MUTMUT), "run", *args.names], cwd=ROOT, capture_output=True,
                         text=True)
    if run.returncode != 0:
        print(run.stdout[-2000:], run.stderr[-2000:], sep="\n")
        return run.returncode
    listed = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    statuses: dict[str, str] = {}
    for line in listed.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            statuses[name] = status
    counts = collections.Counter(statuses.values())
    known = equivalent()
    survivors = sorted(n for n, s in statuses.items() if s == "survived" and n not in known)
    by_module: dict[str, list[str]] = collections.defaultdict(list)
    for name in survivors:
        by_module[name.split(".x")[0].rsplit(".", 1)[0]].append(name)
    print(f"{len(statuses)} mutants in {time.monotonic() - started:.0f} s: "
          + ", ".join(f"{count} {status}" for status, count in counts.most_common()))
    print(f"{len(known)} listed as equivalent (scripts/equivalent_mutants.txt)")
    for module, names in sorted(by_module.items()):
        print(f"\n{module}: {len(names)} surviving")
        for name in names:
            print(f"  {name}")
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main())
