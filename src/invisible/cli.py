"""The `invisible` command.

    invisible pki init DIR [--parties bank,hospital,telco] [--coordinators c] [--dealers d]
    invisible pki request --id bank [--role party] [--out DIR]
    invisible pki sign bank.csr --ca DIR [--out bank.pem] [--days N] [--yes]
    invisible pki revoke bank.pem --ca DIR [--reason key-compromise] [--yes]
    invisible node serve --config parties/bank/party.toml [--role dealer] [--accept-broken-ledger]
    invisible node check --config parties/bank/party.toml [--role dealer]
    invisible node reload --config parties/bank/party.toml
    invisible node probe --config parties/bank/party.toml [--role dealer] [--timeout S]
    invisible health --coordinator parties/coordinator.toml
    invisible job run job.toml [--json]
    invisible job kinds [--markdown]
    invisible job template KIND [--coordinator coordinator.toml]
    invisible meter report --config party.toml [--json|--csv] [--since DATE]
    invisible meter verify --config party.toml [--receipts DIR]
    invisible meter verify-receipt RECEIPT --public-key bank-ledger.pub [--public-key ...]
    invisible meter export --config party.toml --out FILE [--event witnessed]
    invisible meter backup --config party.toml --out FILE
    invisible meter rotate-key --config party.toml
    invisible bench NAME... [--quick] [--json PATH]
    invisible demo

Errors the user can fix print one line, ``invisible: error: ...``, and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from invisible import __version__
from invisible.errors import ConfigError, InvisibleError

if TYPE_CHECKING:
    from invisible.node.node import PartyNode

EXIT_USAGE = 2


def _split_ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _pki_init(args: argparse.Namespace) -> int:
    from invisible.net.pki import init_ca, init_pki

    if args.parties is None:
        init_ca(Path(args.directory), overwrite=args.force)
        print(f"CA written to {args.directory} (ca.pem; ca.crl, its revocation list, empty, for "
              "every node's [tls] crl; and ca.key, which never leaves this machine); sign each "
              "institution's request with `invisible pki sign`")
        return 0
    issued = init_pki(
        Path(args.directory), _split_ids(args.parties), _split_ids(args.coordinators),
        _split_ids(args.dealers), overwrite=args.force, approvers=_split_ids(args.approvers),
    )
    print(f"CA and {len(issued.identities)} certificates written to {args.directory}:")
    for identity in issued.identities:
        print(f"  {identity.party_id:<16} {identity.role.value}")
    if issued.kept_ledger_keys:
        print("ledger signing keys kept (never replaced by a PKI command): "
              + ", ".join(issued.kept_ledger_keys))
    return 0


def _pki_request(args: argparse.Namespace) -> int:
    from invisible.net.pki import Identity, Role
    from invisible.operator import pki_request

    for line in pki_request(Identity(args.id, Role(args.role)), Path(args.out)):
        print(line)
    return 0


def _pki_sign(args: argparse.Namespace) -> int:
    from invisible.operator import pki_sign

    return pki_sign(Path(args.request), Path(args.ca), Path(args.out) if args.out else None,
                    args.days, args.yes)


def _pki_revoke(args: argparse.Namespace) -> int:
    from invisible.operator import pki_revoke

    return pki_revoke(Path(args.ca), Path(args.certificate) if args.certificate else None,
                      args.serial, args.reason, args.yes)


def _node_reload(args: argparse.Namespace) -> int:
    from invisible.operator import reload_node

    print(reload_node(Path(args.config)))
    return 0


def _node_probe(args: argparse.Namespace) -> int:
    from invisible.net.pki import Role
    from invisible.operator import probe_node

    try:
        print(probe_node(Path(args.config), Role(args.role), args.timeout))
    except InvisibleError as exc:  # 1, not 2: a container engine reserves 2 in health checks
        print(f"invisible: not serving: {exc}", file=sys.stderr)
        return 1
    return 0


def _node_check(args: argparse.Namespace) -> int:
    from invisible.net.pki import Role
    from invisible.operator import check_node

    for line in check_node(Path(args.config), Role(args.role)):
        print(line)
    print("ok: the node would start with this config")
    return 0


def _node_alignments(args: argparse.Namespace) -> int:
    from invisible.kinds.alignments import AlignmentStore
    from invisible.node.config import load_party_config
    from invisible.text import printable

    config = load_party_config(args.config)
    kept = AlignmentStore(config.alignments_dir).list()
    if not kept:
        print(f"party '{config.party_id}' keeps no alignment")
        return 0
    print(f"{'name':30s} {'rows':>8s} {'dataset.column':30s} {'parties':28s} expires")
    for a in kept:
        print(f"{printable(a.name, 30):30s} {a.size:8d} {printable(a.dataset + '.' + a.column, 30):30s} "
              f"{printable(','.join(a.parties), 28):28s} {a.expires}")
    return 0


def _node_models(args: argparse.Namespace) -> int:
    from invisible.kinds.models import ModelStore
    from invisible.node.config import load_party_config
    from invisible.text import printable

    config = load_party_config(args.config)
    store = ModelStore(config.results_dir / "models")
    if args.delete:
        if not args.requester:
            print("invisible: error: --delete needs --requester (each requester names its own "
                  "models)", file=sys.stderr)
            return 2
        store.delete(args.delete, args.requester)
        print(f"model '{printable(args.delete, 64)}' of '{printable(args.requester, 64)}' "
              f"deleted from party '{config.party_id}'")
        return 0
    kept = store.list()
    if not kept:
        print(f"party '{config.party_id}' keeps no model")
        return 0
    print(f"{'name':30s} {'kind':12s} {'form':7s} {'parties':28s} {'requester':14s} created")
    for m in kept:
        print(f"{printable(m.name, 30):30s} {m.kind:12s} {m.form:7s} "
              f"{printable(','.join(m.parties), 28):28s} {printable(m.requester, 14):14s} "
              f"{m.created}")
    return 0


#: Set by a harness that starts nodes (NodeProcesses): the pid the node must not outlive.
EXIT_WITH_PARENT = "INVISIBLE_EXIT_WITH_PARENT"


def _parent_to_outlive() -> int | None:
    """The pid of the process the node was started to die with (a test or benchmark killed
    on a timeout would otherwise leave its nodes running, re-parented, holding their ports),
    or None. Read first thing: the parent may be gone before the node has started."""
    value = os.environ.get(EXIT_WITH_PARENT, "")
    return int(value) if value.isdigit() else None


def _node_serve(args: argparse.Namespace) -> int:
    # Handlers first: a SIGTERM during start-up must still end in a clean stop.
    stop, wake = threading.Event(), threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()
        wake.set()

    def request_reload(signum: int, frame: FrameType | None) -> None:
        wake.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    parent = _parent_to_outlive()

    from invisible.net.pki import Role
    from invisible.node.config import load_party_config
    from invisible.node.node import PartyNode
    from invisible.operator import serving
    from invisible.runtime import OneLineFormatter, keep_freed_memory

    keep_freed_memory()

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    role = Role(args.role)
    node = PartyNode(load_party_config(args.config), role=role,
                     accept_broken_ledger=args.accept_broken_ledger)
    node.start()
    print(f"invisible node '{node.party_id}' ({role.value}) serving on {node.address}", flush=True)
    with serving(node.config.ledger.path):
        _serve_until_stopped(node, stop, wake, parent)
    node.stop()
    print(f"invisible node '{node.party_id}' stopped", flush=True)
    return 0


def _serve_until_stopped(node: PartyNode, stop: threading.Event, wake: threading.Event,
                         parent: int | None) -> None:
    """Reload on SIGHUP (`wake`) until SIGTERM or SIGINT (`stop`), or the parent is gone."""
    while not stop.is_set():
        if wake.wait(0.5) and not stop.is_set():  # SIGHUP: peers and policies again
            wake.clear()
            try:
                changed = node.reload()
            except InvisibleError as exc:
                logging.getLogger(__name__).error("reload refused, nothing changed: %s", exc)
            else:
                print(f"invisible node '{node.party_id}' reloaded (new or moved peers: "
                      f"{', '.join(changed) or 'none'})", flush=True)
        if parent is not None and os.getppid() != parent:
            logging.getLogger(__name__).warning(
                "the process that started this node (pid %d) is gone: stopping", parent)
            break


def _health(args: argparse.Namespace) -> int:
    from invisible.coordinator.federation import Federation

    with Federation.from_config(args.coordinator) as federation:
        failures = 0
        for party in federation.parties:
            try:
                info = federation.clients[party].health(timeout_s=args.timeout)
                state = "serving" if info.serving else "stopping"
                revocation = (f"revocation list {info.revocation_list_number} "
                              f"({info.revoked_certificates} revoked)"
                              if info.revocation_list_number else "no revocation list")
                datasets = ", ".join(
                    f"{d} ({' '.join(info.usable_columns.get(d, ())) or 'no column for you'})"
                    for d in info.datasets) or "-"
                print(f"{party:<16} {state:<9} datasets: {datasets}; "
                      f"certificate {info.certificate_days_left:.0f} days left, CA "
                      f"{info.ca_days_left:.0f}; {revocation}")
            except InvisibleError as exc:
                failures += 1
                print(f"{party:<16} DOWN      {exc}")
    return 1 if failures else 0


def _job_run(args: argparse.Namespace) -> int:
    from invisible.coordinator.jobfile import run_job_file

    result = run_job_file(args.job)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        print(result.report())
    return 0


def _job_kinds(args: argparse.Namespace) -> int:
    from invisible.coordinator.templates import kinds_markdown, kinds_text

    print(kinds_markdown() if args.markdown else kinds_text(), end="" if args.markdown else "\n")
    return 0


def _job_template(args: argparse.Namespace) -> int:
    from invisible.coordinator.templates import EXAMPLE_DEALER, EXAMPLE_PARTIES, job_template

    parties: tuple[str, ...] = EXAMPLE_PARTIES
    dealer, coordinator = EXAMPLE_DEALER, "coordinator.toml"
    if args.coordinator:
        from invisible.coordinator.config import load_coordinator_config

        config = load_coordinator_config(args.coordinator)
        parties = tuple(config.parties)
        dealer = next(iter(config.dealers), EXAMPLE_DEALER)
        coordinator = str(Path(args.coordinator).resolve())  # the job file may go anywhere
    print(job_template(args.kind, parties, dealer, coordinator), end="")
    return 0


def _meter_report(args: argparse.Namespace) -> int:
    from invisible.metering import report
    from invisible.node.config import load_party_config

    config = load_party_config(args.config)
    rows = report.ledger_report(config.ledger.path, args.since)
    if args.json:
        print(report.to_json(rows))
    elif args.csv:
        print(report.to_csv(rows), end="")
    else:
        print(f"meter report of '{config.party_id}'" + (f" since {args.since}" if args.since else ""))
        print(report.to_table(rows))
    return 0


def _meter_bill(args: argparse.Namespace) -> int:
    from invisible.metering import billing
    from invisible.node.config import load_party_config

    config = load_party_config(args.config)
    rows = billing.ledger_bill(config.ledger.path, args.since, args.until, args.requester)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        period = "".join(f" {w} {v}" for w, v in (("since", args.since), ("until", args.until))
                         if v)
        print(f"bill of '{config.party_id}'{period}"
              + (f" for '{args.requester}'" if args.requester else ""))
        print(billing.bill_table(rows))
    return 0


def _public_key_path(signing_key: Path, given: str | None) -> Path:
    return Path(given) if given else signing_key.with_suffix(".pub")


def _meter_verify(args: argparse.Namespace) -> int:
    from invisible.metering.audit import verify_ledger
    from invisible.metering.keys import load_key_history
    from invisible.node.config import load_party_config

    config = load_party_config(args.config)
    key_path = _public_key_path(config.ledger.signing_key, args.public_key)
    report, problems = verify_ledger(
        config.ledger.path, config.party_id, load_key_history(key_path),
        Path(args.receipts) if args.receipts else None,
        Path(args.keys) if args.keys else key_path.parent,
        config.tls.ca.read_bytes() if config.tls.ca.exists() else None,
    )
    print(report)
    for problem in problems:
        print(f"  {problem}")
    if args.receipts and not problems:
        print(f"  consistent with every receipt and countersigned head in {args.receipts}")
    return 0 if report.ok and not problems else 1


def _meter_backup(args: argparse.Namespace) -> int:
    from invisible.metering.audit import backup_ledger
    from invisible.metering.keys import load_key_history
    from invisible.node.config import load_party_config

    config = load_party_config(args.config)
    key = load_key_history(_public_key_path(config.ledger.signing_key, None))
    report = backup_ledger(config.ledger.path, config.party_id, key, Path(args.out))
    print(f"{config.ledger.path} backed up to {args.out}; the copy: {report}")
    return 0 if report.ok else 1


def _meter_verify_receipt(args: argparse.Namespace) -> int:
    from invisible.metering.audit import audit_file

    lines, ok = audit_file(Path(args.receipt), [Path(p) for p in args.public_key], args.party)
    for line in lines:
        print(line)
    return 0 if ok else 1


def _meter_export(args: argparse.Namespace) -> int:
    from invisible.metering.exports import export_document
    from invisible.metering.ledger import Ledger
    from invisible.metering.report import check_events, parse_since
    from invisible.metering.signing import load_signing_key
    from invisible.metering.startup import ledger_damage
    from invisible.node.config import load_party_config

    config = load_party_config(args.config)
    since = parse_since(args.since) if args.since else None
    key = load_signing_key(config.ledger.signing_key)  # the node signs what it exports
    damage = ledger_damage(config.ledger.path, config.party_id, config.ledger.signing_key)
    if damage is not None:  # its signature must never vouch for a chain it cannot
        raise ConfigError(f"ledger {config.ledger.path} {damage}; an export is signed only "
                          "over a chain the node can vouch for (see `invisible meter verify`)")
    ledger = Ledger(config.ledger.path, config.party_id, None)
    try:
        if args.event:
            check_events(args.event, ledger.events())
        head = ledger.head()  # first: a running node may append while the entries are read
        entries = [e for e in ledger.entries(since=since) if e.seq <= head[0]
                   and (not args.event or e.event in args.event)]
    finally:
        ledger.close()
    document = export_document(config.party_id, entries, since, args.event, head, key)
    Path(args.out).write_text(json.dumps(document, indent=1, sort_keys=True))
    print(f"{len(entries)} entries of '{config.party_id}' written to {args.out}")
    return 0


def _meter_rotate_key(args: argparse.Namespace) -> int:
    from invisible.metering.keys import history_path
    from invisible.metering.rotation import rotate_ledger_key
    from invisible.node.config import load_party_config

    config = load_party_config(args.config)
    if config.ledger.store == "none":
        raise ConfigError(f"{config.source}: this node keeps no ledger; there is no key to rotate")
    key = config.ledger.signing_key
    entry = rotate_ledger_key(config.ledger.path, config.party_id, key)
    print(f"ledger key of '{config.party_id}' rotated at entry {entry.seq}; from now on it signs "
          f"with the new key in {key}")
    print(f"give auditors {key.with_suffix('.pub')} (the new public key) and "
          f"{history_path(key)} (every key it had, so older receipts still verify)")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from invisible.benchmarking import run_benchmarks
    from invisible.runtime import keep_freed_memory

    keep_freed_memory()

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

    from invisible.net.pki import REVOCATION_REASONS

    pki = commands.add_parser("pki", help="development certificates").add_subparsers(
        dest="pki_command", required=True)
    init = pki.add_parser("init", help="create a CA (and, for development, a key and "
                          "certificate per identity named)")
    init.add_argument("directory")
    init.add_argument("--parties", help="comma-separated party ids (none: the CA alone)")
    init.add_argument("--coordinators", default="coordinator", help="comma-separated ids")
    init.add_argument("--dealers", default="", help="comma-separated ids")
    init.add_argument("--approvers", default="", help="comma-separated ids")
    init.add_argument("--force", action="store_true", help="replace an existing CA and TLS "
                      "certificates (ledger signing keys are always kept)")
    init.set_defaults(handler=_pki_init)
    request = pki.add_parser("request", help="make this institution's key and a certificate "
                             "signing request (the key never leaves the machine)")
    request.add_argument("--id", required=True, help="the identity's id, e.g. bank")
    request.add_argument("--role", choices=["party", "dealer", "coordinator", "approver"],
                         default="party")
    request.add_argument("--out", default=".", help="folder for <id>.key and <id>.csr")
    request.set_defaults(handler=_pki_request)
    sign = pki.add_parser("sign", help="sign a request with the federation's CA, after "
                          "showing what will be signed")
    sign.add_argument("request", help="the <id>.csr file")
    sign.add_argument("--ca", required=True, help="the folder holding ca.pem and ca.key")
    sign.add_argument("--out", help="the certificate to write (default: <request>.pem)")
    sign.add_argument("--days", type=int, default=365, help="validity (default 365)")
    sign.add_argument("--yes", action="store_true", help="sign without asking")
    sign.set_defaults(handler=_pki_sign)
    revoke = pki.add_parser("revoke", help="add a certificate to the CA's revocation list "
                            "(ca.crl), after showing whose it is")
    revoke.add_argument("certificate", nargs="?", help="the certificate (.pem) to revoke")
    revoke.add_argument("--serial", help="or its serial number (hex), without the file")
    revoke.add_argument("--ca", required=True, help="the folder holding ca.pem and ca.key")
    revoke.add_argument("--reason", default="unspecified", choices=list(REVOCATION_REASONS))
    revoke.add_argument("--yes", action="store_true", help="revoke without asking")
    revoke.set_defaults(handler=_pki_revoke)

    node = commands.add_parser("node", help="run a party node").add_subparsers(
        dest="node_command", required=True)
    serve = node.add_parser("serve", help="serve a party node until SIGINT/SIGTERM")
    serve.add_argument("--config", required=True, help="the party's TOML file")
    serve.add_argument("--role", choices=["party", "dealer"], default="party",
                       help="dealer: serves correlated randomness, never computes, holds no data")
    serve.add_argument("--accept-broken-ledger", action="store_true",
                       help="start even if the node's ledger fails its check at start (edited, "
                       "cut or missing); the choice and what was wrong are signed into it")
    serve.set_defaults(handler=_node_serve)
    check = node.add_parser("check", help="load and check a node's config, certificate, "
                            "datasets and policies without serving")
    check.add_argument("--config", required=True, help="the party's TOML file")
    check.add_argument("--role", choices=["party", "dealer"], default="party")
    check.set_defaults(handler=_node_check)
    probe = node.add_parser("probe", help="ask the node serving a config on this machine, "
                            "over its port and with its certificate, whether it serves "
                            "(exit 0) or not: a container's health check")
    probe.add_argument("--config", required=True, help="the party's TOML file")
    probe.add_argument("--role", choices=["party", "dealer"], default="party")
    probe.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    probe.set_defaults(handler=_node_probe)
    reload = node.add_parser("reload", help="ask the node serving a config on this machine to "
                             "read it again (peers, policies, a renewed certificate), as "
                             "SIGHUP does")
    reload.add_argument("--config", required=True, help="the party's TOML file")
    reload.set_defaults(handler=_node_reload)
    listing = node.add_parser("alignments", help="list the alignments (rows of set "
                              "intersections) this node keeps; expired ones are deleted")
    listing.add_argument("--config", required=True, help="the party's TOML file")
    listing.set_defaults(handler=_node_alignments)
    models = node.add_parser("models", help="list the trained models this node keeps its part "
                             "of, or delete one")
    models.add_argument("--config", required=True, help="the party's TOML file")
    models.add_argument("--delete", metavar="NAME", help="delete this node's part of a model")
    models.add_argument("--requester", help="whose model --delete names")
    models.set_defaults(handler=_node_models)

    health = commands.add_parser("health", help="ask every party of a federation if it serves")
    health.add_argument("--coordinator", required=True, help="the coordinator's TOML file")
    health.add_argument("--timeout", type=float, default=5.0)
    health.set_defaults(handler=_health)

    job = commands.add_parser("job", help="joint jobs").add_subparsers(
        dest="job_command", required=True)
    run = job.add_parser("run", help="run a job described by a TOML file; print its result")
    run.add_argument("job")
    run.add_argument("--json", action="store_true", help="the result as JSON")
    run.set_defaults(handler=_job_run)
    kinds = job.add_parser("kinds", help="the job kinds and their parameters")
    kinds.add_argument("--markdown", action="store_true", help="as the README's reference")
    kinds.set_defaults(handler=_job_kinds)
    template = job.add_parser("template", help="a commented job file for one kind")
    template.add_argument("kind")
    template.add_argument("--coordinator", help="take party and dealer names from this "
                          "coordinator config (default: the example federation's)")
    template.set_defaults(handler=_job_template)

    meter = commands.add_parser("meter", help="reports and audits of a node's ledger")
    meters = meter.add_subparsers(dest="meter_command", required=True)
    report = meters.add_parser("report", help="per requester, dataset and job kind")
    report.add_argument("--config", required=True, help="the party's TOML file")
    output = report.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument("--csv", action="store_true")
    report.add_argument("--since", help="an ISO date or time (UTC), e.g. 2026-11-01")
    report.set_defaults(handler=_meter_report)
    billed = meters.add_parser("bill", help="what jobs cost, by the price lists: per "
                               "requester and dataset")
    billed.add_argument("--config", required=True, help="the party's TOML file")
    billed.add_argument("--since", help="an ISO date or time (UTC), e.g. 2026-11-01")
    billed.add_argument("--until", help="an ISO date or time (UTC), not included")
    billed.add_argument("--requester", help="only this requester's jobs")
    billed.add_argument("--json", action="store_true")
    billed.set_defaults(handler=_meter_bill)
    verify = meters.add_parser("verify", help="walk the chain; with --receipts, check "
                               "receipts and countersigned heads against it")
    verify.add_argument("--config", required=True, help="the party's TOML file")
    verify.add_argument("--public-key", help="the node's ledger public key "
                        "(default: beside its signing key)")
    verify.add_argument("--receipts", metavar="DIR", help="receipts and exported entries")
    verify.add_argument("--keys", metavar="DIR", help="folder of <id>-ledger.pub files")
    verify.set_defaults(handler=_meter_verify)
    receipt = meters.add_parser("verify-receipt", help="check receipts or an export against "
                                "the signing nodes' keys; an export's sequence for gaps")
    receipt.add_argument("receipt", help="a receipts file, an export or one entry (JSON)")
    receipt.add_argument("--public-key", required=True, action="append",
                         help="<id>-ledger.pub (repeatable; with <id>-ledger.keys beside it "
                         "if the node rotated its key); other nodes' keys are looked up beside it")
    receipt.add_argument("--party", help="only this party's receipts in the file")
    receipt.set_defaults(handler=_meter_verify_receipt)
    export = meters.add_parser("export", help="write a node's entries as JSON evidence, "
                               "under a header signed with its ledger key")
    export.add_argument("--config", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--event", action="append", help="only these events (repeatable)")
    export.add_argument("--since", help="an ISO date or time (UTC), e.g. 2026-11-01")
    export.set_defaults(handler=_meter_export)
    backup = meters.add_parser("backup", help="copy a node's ledger while it runs (a "
                               "consistent snapshot) and verify the copy's chain")
    backup.add_argument("--config", required=True, help="the party's TOML file")
    backup.add_argument("--out", required=True, help="the copy to write (never replaced)")
    backup.set_defaults(handler=_meter_backup)
    rotate = meters.add_parser("rotate-key", help="hand the ledger on to a new signing key, "
                               "recorded in it and signed by both keys (node stopped)")
    rotate.add_argument("--config", required=True, help="the party's TOML file")
    rotate.set_defaults(handler=_meter_rotate_key)

    bench = commands.add_parser("bench", help="run benchmarks from benchmarks/")
    bench.add_argument("names", nargs="+", metavar="NAME")
    bench.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    bench.add_argument("--json", metavar="PATH", help="write the results as JSON")
    bench.set_defaults(handler=_bench)

    demo = commands.add_parser("demo", help="the whole path on this machine, no setup")
    demo.set_defaults(handler=_demo)

    from invisible.cli_approvals import add_commands

    add_commands(commands)
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
