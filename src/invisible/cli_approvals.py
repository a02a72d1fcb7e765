"""`invisible approvals`, `approve`, `reject`, `withdraw`: an approver's commands.

Each reads the approver's file (see :mod:`invisible.coordinator.approver`)
and calls the party nodes it names over mutual TLS with its approver
certificate; each decision is signed with that certificate's key.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def _approvals(args: argparse.Namespace) -> int:
    from invisible.coordinator.approver import Approver, describe

    with Approver.from_config(args.config) as approver:
        rows = describe(approver.pending([args.party] if args.party else None))
    if args.json:
        print(json.dumps(rows, indent=1, sort_keys=True))
        return 0
    if not rows:
        print("no job waits for your decision")
    for row in rows:
        rules = "; ".join(f"{len(r['approved'])} of {r['required']} approved "
                          f"({', '.join(r['approvers'])})"
                          + (f", rejected by {', '.join(r['rejected'])}" if r["rejected"] else "")
                          for r in row["rules"])
        rho = f", rho {row['rho']:g}" if row["rho"] else ", no noise"
        print(f"{row['party']:<12} {row['job_id']}: {row['kind']} by {row['requester']} on "
              f"{row['dataset']} ({', '.join(row['columns'])}) to {row['recipient']}{rho}; "
              f"{rules}; until {row['deadline']}")
        print(f"{'':<12} parties {', '.join(row['parties'])}; parameters "
              f"{json.dumps(row['params'], sort_keys=True)}; spec digest {row['spec_digest']}")
    return 0


def _decide(args: argparse.Namespace) -> int:
    from invisible.coordinator.approver import Approver

    with Approver.from_config(args.config) as approver:
        entry: dict[str, Any]
        if args.command == "approve":
            entry = approver.approve(args.party, args.job, args.reason, args.hours)
        elif args.command == "reject":
            entry = approver.reject(args.party, args.job, args.reason)
        else:
            entry = approver.withdraw(args.party, args.job, args.reason)
    if args.json:
        print(json.dumps(entry, indent=1, sort_keys=True))
    else:
        print(f"job {args.job} on {args.party}: {entry['event']}, recorded as entry "
              f"{entry['seq']} of its ledger; the job is {entry['state']}")
    return 0


def add_commands(commands: Any) -> None:
    """Register the approver's commands on the top-level subparsers."""
    listing = commands.add_parser("approvals", help="the jobs held for your decision (approver)")
    listing.add_argument("--config", required=True, help="the approver's TOML file")
    listing.add_argument("--party", help="only this party's node")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_approvals)
    for name, help_text in (("approve", "consent to a held job, signed (approver)"),
                            ("reject", "refuse a held job, signed (approver)"),
                            ("withdraw", "take back your approval before the job runs")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("job", help="the job id")
        command.add_argument("--config", required=True, help="the approver's TOML file")
        command.add_argument("--party", required=True, help="the node holding the job")
        command.add_argument("--reason", required=name == "reject", default="",
                             help="why (recorded with the decision; at most 200 characters)")
        if name == "approve":
            command.add_argument("--hours", type=float, default=None,
                                 help="how long the approval holds (default and at most: the "
                                      "rule's consent_hours)")
        command.add_argument("--json", action="store_true")
        command.set_defaults(handler=_decide)
