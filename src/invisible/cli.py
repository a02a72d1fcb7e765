"""The `invisible` command.

    invisible pki init DIR --parties bank,hospital,telco [--coordinators c] [--dealers d]
    invisible node serve --config parties/bank/party.toml
    invisible health --coordinator parties/coordinator.toml
    invisible job run job.toml
    invisible bench NAME... [--quick] [--json PATH]
    invisible demo

Errors the user can fix print one line, ``invisible: error: ...``, and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from invisible import __version__
from invisible.errors import InvisibleError

EXIT_USAGE = 2


def _split_ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _pki_init(args: argparse.Namespace) -> int:
    from invisible.net.pki import init_pki

    identities = init_pki(
        Path(args.directory), _split_ids(args.parties), _split_ids(args.coordinators),
        _split_ids(args.dealers), overwrite=args.force,
    )
    print(f"CA and {len(identities)} certificates written to {args.directory}:")
    for identity in identities:
        print(f"  {identity.party_id:<16} {identity.role.value}")
    return 0


def _node_serve(args: argparse.Namespace) -> int:
    from invisible.node.config import load_party_config
    from invisible.node.node import PartyNode

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    node = PartyNode(load_party_config(args.config))
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    node.start()
    print(f"invisible node '{node.party_id}' (party) serving on {node.address}", flush=True)
    while not stop.wait(0.5):
        pass
    node.stop()
    print(f"invisible node '{node.party_id}' stopped", flush=True)
    return 0


def _health(args: argparse.Namespace) -> int:
    from invisible.jobs.federation import Federation

    with Federation.from_config(args.coordinator) as federation:
        failures = 0
        for party in federation.parties:
            try:
                info = federation.clients[party].health(timeout_s=args.timeout)
                state = "serving" if info.serving else "stopping"
                print(f"{party:<16} {state:<9} datasets: {', '.join(info.datasets) or '-'}")
            except InvisibleError as exc:
                failures += 1
                print(f"{party:<16} DOWN      {exc}")
    return 1 if failures else 0


def _job_run(args: argparse.Namespace) -> int:
    from invisible.jobs.jobfile import run_job_file

    print(json.dumps(run_job_file(args.job), indent=2, sort_keys=True))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from invisible.benchmarking import run_benchmarks

    return run_benchmarks(args.names, args.quick, Path(args.json) if args.json else None)


def _demo(args: argparse.Namespace) -> int:
    from invisible.demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="invisible",
        description="Privacy computing: usable but invisible, controllable and measurable.",
    )
    parser.add_argument("--version", action="version", version=f"invisible {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    pki = commands.add_parser("pki", help="development certificates").add_subparsers(
        dest="pki_command", required=True)
    init = pki.add_parser("init", help="create a CA and a certificate per identity")
    init.add_argument("directory")
    init.add_argument("--parties", required=True, help="comma-separated party ids")
    init.add_argument("--coordinators", default="coordinator", help="comma-separated ids")
    init.add_argument("--dealers", default="", help="comma-separated ids")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(handler=_pki_init)

    node = commands.add_parser("node", help="run a party node").add_subparsers(
        dest="node_command", required=True)
    serve = node.add_parser("serve", help="serve a party node until SIGINT/SIGTERM")
    serve.add_argument("--config", required=True, help="the party's TOML file")
    serve.set_defaults(handler=_node_serve)

    health = commands.add_parser("health", help="ask every party of a federation if it serves")
    health.add_argument("--coordinator", required=True, help="the coordinator's TOML file")
    health.add_argument("--timeout", type=float, default=5.0)
    health.set_defaults(handler=_health)

    job = commands.add_parser("job", help="joint jobs").add_subparsers(
        dest="job_command", required=True)
    run = job.add_parser("run", help="run a job described by a TOML file")
    run.add_argument("job")
    run.set_defaults(handler=_job_run)

    bench = commands.add_parser("bench", help="run benchmarks from benchmarks/")
    bench.add_argument("names", nargs="+", metavar="NAME")
    bench.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    bench.add_argument("--json", metavar="PATH", help="write the results as JSON")
    bench.set_defaults(handler=_bench)

    demo = commands.add_parser("demo", help="the whole path on this machine, no setup")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except InvisibleError as exc:
        print(f"invisible: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
