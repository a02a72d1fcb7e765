"""Approvals: jobs a data owner's policy holds until k of n named approvers consent.

In a party's TOML, under a dataset's policy (as many rules as needed; a job
held by several needs each one's consent)::

    [[datasets.customers.policy.approval]]
    approvers = ["dpo-bank", "dpo-hospital", "ethics"]  # identities with approver certificates
    required = 2                  # k: how many of them must approve
    kinds = ["vertical_lr"]       # which jobs it holds; each key optional, all given must match:
    columns = ["income"]          #   using any of these columns
    requesters = ["analyst"]      #   asked for by one of these
    recipients = ["*"]            #   releasing to one of these parties ("*": any party but
                                  #   the requester itself)
    min_rho = 0.5                 #   declaring a privacy cost of at least this, or none at all
                                  #   (a release without noise costs more than any rho)
    hours = 24                    # how long a held job waits for its approvals
    consent_hours = 24            # the longest one approval stays valid

The steps, at the node that holds a job, and what each one learns:

1. Start: the job is checked and reserved as any other (nothing reads data
   before the policy allowed it); if rules hold it, an `awaiting-approval`
   entry records them and the deadline, and the coordinator is told the
   deadline. The requester learns that its job is held, which its policy
   tells anyway.
2. An approver lists the jobs waiting for it: what the request declares
   (requester, kind, parties, parameters, dataset, columns, recipient,
   privacy cost, spec digest), the deadline and the decisions so far. Never
   anything read from the data (not even a row count: an approver may work
   for another institution).
3. It decides: a :class:`Decision` (this node, the job, its spec digest,
   approve, reject or withdraw, a reason, when, until when) signed with the
   key of the certificate it calls with, checked against that certificate
   and recorded whole (`approved`, `rejected` or `withdrawn`, with the
   signature and the certificate) in the node's ledger. A decision for
   another node, job or spec, one dated over 300 s behind or 5 s ahead of
   the node's clock or not after the approver's last, one by an identity no
   rule names or by the job's requester, one past the deadline, or a ninth
   by one approver on one job is refused and changes nothing.
4. Run is refused unless each rule has `required` approvals of its
   approvers still valid (a consent expires, can be withdrawn until the job
   runs, and stops counting once its certificate is revoked). When
   rejections leave a rule unable to reach k (more than n - k), or the
   deadline passes, the job is cancelled and its reservation given back. A
   job that runs carries in its terminal entry (the receipt) the approvals
   it ran on: approver, when, until when, signature.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from invisible.errors import ConfigError, PolicyError
from invisible.metering.entries import canonical_json
from invisible.metering.privacy import budget_units


class Use(Protocol):
    """What a rule reads of a job's declared use (a policy's UseRequest)."""

    @property
    def requester(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def columns(self) -> tuple[str, ...]: ...
    @property
    def recipient(self) -> str | None: ...
    @property
    def rho(self) -> int: ...

ANY = "*"
DECISIONS = ("approve", "reject", "withdraw")
#: The ledger event of each decision.
EVENTS = {"approve": "approved", "reject": "rejected", "withdraw": "withdrawn"}
AWAITING = "awaiting-approval"
#: How far a decision's time may be behind the node's clock, and ahead of it (little: a
#: decision dated ahead would block the approver's own next one until then).
CLOCK_SKEW_S = 300.0
FUTURE_SKEW_S = 5.0
#: Decisions one approver may make on one job (each is a ledger entry).
MAX_DECISIONS = 8
MAX_REASON = 200
#: An approver certificate's identity name ends so (see invisible.net.pki.target_name).
APPROVER_SUFFIX = "approver.invisible"
_KEYS = {"approvers", "required", "kinds", "columns", "requesters", "recipients", "min_rho",
         "hours", "consent_hours"}


@dataclass(frozen=True)
class ApprovalRule:
    approvers: tuple[str, ...]
    required: int
    kinds: frozenset[str] = frozenset({ANY})
    columns: frozenset[str] = frozenset({ANY})
    requesters: frozenset[str] = frozenset({ANY})
    #: It holds only jobs releasing to one of these (ANY: to any party but the requester);
    #: None: whoever receives the outputs.
    recipients: frozenset[str] | None = None
    #: It holds only jobs declaring at least this privacy cost (nano-rho), or none.
    min_rho: int | None = None
    hours: float = 24.0
    consent_hours: float = 24.0

    def holds(self, use: Use) -> bool:
        """Whether a job's declared use falls under this rule (the request alone)."""
        if ANY not in self.requesters and use.requester not in self.requesters:
            return False
        if ANY not in self.kinds and use.kind not in self.kinds:
            return False
        if ANY not in self.columns and not self.columns & set(use.columns):
            return False
        if self.recipients is not None:
            receiver = use.recipient
            if receiver is None or (ANY not in self.recipients
                                    and receiver not in self.recipients):
                return False
        return self.min_rho is None or not use.rho or use.rho >= self.min_rho

    def describe(self) -> str:
        return f"{self.required} of {', '.join(self.approvers)}"


def strings(value: Any, where: str) -> frozenset[str]:
    """A policy's list of names (identities, kinds, columns); ConfigError naming `where`."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a non-empty list of strings")
    return frozenset(value)


def parse_approval_rules(value: Any, where: str) -> tuple[ApprovalRule, ...]:
    """The `approval` rules of a dataset's policy; ConfigError naming the key."""
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of tables ([[...approval]])")
    return tuple(_rule(rule, f"{where}[{index}]") for index, rule in enumerate(value))


def _rule(table: Any, at: str) -> ApprovalRule:
    if not isinstance(table, dict):
        raise ConfigError(f"{at} must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{at} has unknown key(s) {', '.join(unknown)}")
    approvers = strings(table.get("approvers"), f"{at}.approvers")
    if ANY in approvers:
        raise ConfigError(f"{at}.approvers must name identities, not '*'")
    required = table.get("required", len(approvers))
    if isinstance(required, bool) or not isinstance(required, int) \
            or not 1 <= required <= len(approvers):
        raise ConfigError(f"{at}.required must be a whole number from 1 to the number of "
                          f"approvers ({len(approvers)})")

    def optional(key: str) -> frozenset[str]:
        return strings(table[key], f"{at}.{key}") if key in table else frozenset({ANY})

    return ApprovalRule(
        tuple(sorted(approvers)), required, optional("kinds"), optional("columns"),
        optional("requesters"),
        strings(table["recipients"], f"{at}.recipients") if "recipients" in table else None,
        budget_units(table["min_rho"], f"{at}.min_rho") if "min_rho" in table else None,
        _hours(table, "hours", at), _hours(table, "consent_hours", at))


def _hours(table: Mapping[str, Any], key: str, at: str) -> float:
    value = table.get(key, 24.0)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 < value <= 24 * 366:
        raise ConfigError(f"{at}.{key} must be a number of hours above 0 and at most a year")
    return float(value)


def rules_holding(rules: Iterable[ApprovalRule], use: Use) -> tuple[ApprovalRule, ...]:
    return tuple(rule for rule in rules if rule.holds(use))


def iso(moment: float) -> str:
    """A unix time as the ledger writes times (UTC, microseconds)."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _unix(text: Any, what: str) -> float:
    if not isinstance(text, str):
        raise PolicyError(f"the decision's {what} must be a time")
    try:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        raise PolicyError(f"the decision's {what} is not a time such as "
                          "2026-11-30T09:30:00.000000Z") from None
    return moment.timestamp()


@dataclass(frozen=True)
class Decision:
    """An approver's decision on one held job at one node, as it signs it."""

    node: str
    job_id: str
    spec_digest: str
    decision: str
    reason: str
    decided_at: str
    #: Until when an approval holds (the same as decided_at for reject and withdraw).
    expires: str

    def payload(self) -> bytes:
        return canonical_json(self.__dict__)

    @classmethod
    def make(cls, node: str, job_id: str, spec_digest: str, decision: str, reason: str,
             hours: float = 24.0, now: float | None = None) -> Decision:
        now = datetime.now(UTC).timestamp() if now is None else now
        until = now + hours * 3600 if decision == "approve" else now
        return cls(node, job_id, spec_digest, decision, reason[:MAX_REASON], iso(now),
                   iso(until))

    @classmethod
    def parse(cls, text: str) -> Decision:
        """A decision from its canonical JSON; PolicyError naming what is wrong."""
        import json

        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PolicyError("the decision is not JSON") from None
        fields = set(cls.__dataclass_fields__)
        if not isinstance(data, dict) or set(data) != fields \
                or not all(isinstance(v, str) for v in data.values()):
            raise PolicyError(f"a decision has exactly the text fields {', '.join(sorted(fields))}")
        decision = cls(**data)
        if canonical_json(data) != text.encode():
            raise PolicyError("the decision is not in canonical JSON (sorted keys, no spaces)")
        if decision.decision not in DECISIONS:
            raise PolicyError(f"a decision is one of {', '.join(DECISIONS)}")
        if len(decision.reason) > MAX_REASON or not decision.reason.isprintable():
            raise PolicyError(f"a decision's reason is printable text of at most {MAX_REASON} "
                              "characters")
        return decision

    def times(self) -> tuple[float, float]:
        return _unix(self.decided_at, "decided_at"), _unix(self.expires, "expires")

    def sign(self, key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.sign(self.payload(), ec.ECDSA(hashes.SHA256()))

    def signed_by(self, certificate_pem: bytes, signature: bytes) -> bool:
        """Whether `signature` is this decision's, by the key of that certificate."""
        key = x509.load_pem_x509_certificate(certificate_pem).public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        try:
            key.verify(signature, self.payload(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Consent:
    """A decision as the node recorded it: who, what, and the evidence."""

    approver: str
    decision: Decision
    signature: str  # hex
    decided_at: float
    expires: float
    #: The certificate it was made with (PEM): revoked, its approval no longer counts.
    certificate: bytes = b""

    def summary(self) -> dict[str, str]:
        """What a receipt carries of it."""
        return {"approver": self.approver, "decided_at": self.decision.decided_at,
                "expires": self.decision.expires, "signature": self.signature}


def _never(certificate: bytes) -> bool:
    return False


class Held:
    """One held job's rules, deadline and the latest decision of each approver.

    `revoked(certificate)`: whether a certificate is revoked now (an approval made with a
    certificate revoked since no longer counts: a stolen key's consent is taken back by
    revoking it)."""

    def __init__(self, rules: tuple[ApprovalRule, ...], deadline: float, digest: str,
                 requester: str = "", revoked: Callable[[bytes], bool] = _never) -> None:
        self.rules = rules
        self.deadline = deadline
        self.digest = digest
        self.requester = requester
        self.revoked = revoked
        self.decisions: dict[str, Consent] = {}
        #: How many decisions each approver made on the job (capped: each is a ledger entry).
        self.made: Counter[str] = Counter()

    @classmethod
    def of(cls, rules: tuple[ApprovalRule, ...], digest: str, now: float, requester: str = "",
           revoked: Callable[[bytes], bool] = _never) -> Held:
        return cls(rules, now + min(r.hours for r in rules) * 3600, digest, requester, revoked)

    @property
    def approvers(self) -> frozenset[str]:
        return frozenset(a for rule in self.rules for a in rule.approvers)

    def approvals(self, now: float) -> dict[str, Consent]:
        """The approvals in force: given, not withdrawn, not expired, their certificate not
        revoked."""
        return {a: c for a, c in self.decisions.items()
                if c.decision.decision == "approve" and c.expires > now
                and not self.revoked(c.certificate)}

    def approved(self, now: float) -> bool:
        given = self.approvals(now)
        return now < self.deadline and all(
            len(given.keys() & set(rule.approvers)) >= rule.required for rule in self.rules)

    def hopeless(self) -> ApprovalRule | None:
        """A rule whose rejections leave fewer approvers than it needs."""
        rejected = {a for a, c in self.decisions.items() if c.decision.decision == "reject"}
        return next((rule for rule in self.rules
                     if len(rejected & set(rule.approvers)) > len(rule.approvers) - rule.required),
                    None)

    def missing(self, now: float) -> str:
        """Why it may not run: which rules still lack approvals, as 'x of the k approvals of
        (approvers)', or that its deadline passed."""
        if now >= self.deadline:
            return f"its deadline {iso(self.deadline)} passed"
        given = self.approvals(now)
        return "lacks " + "; ".join(
            f"{len(given.keys() & set(rule.approvers))} of the {rule.required} approvals of "
            f"{', '.join(rule.approvers)}" for rule in self.rules
            if len(given.keys() & set(rule.approvers)) < rule.required)

    def consent_hours(self, approver: str) -> float:
        """The longest an approval by `approver` may last: the tightest rule naming it."""
        return min(r.consent_hours for r in self.rules if approver in r.approvers)

    def state(self, now: float) -> list[dict[str, Any]]:
        """Per rule: its approvers, k, how long an approval may last, who approved (in
        force) and who rejected."""
        given = self.approvals(now)
        return [{"approvers": list(rule.approvers), "required": rule.required,
                 "consent_hours": rule.consent_hours,
                 "approved": sorted(given.keys() & set(rule.approvers)),
                 "rejected": sorted(a for a in rule.approvers if a in self.decisions
                                    and self.decisions[a].decision.decision == "reject")}
                for rule in self.rules]

    def check(self, decision: Decision, approver: str, node: str, job_id: str,
              now: float) -> tuple[float, float]:
        """Whether this decision may be taken here and now; its times. PolicyError naming
        what is wrong (never anything of the data)."""
        if approver not in self.approvers:
            raise PolicyError(f"'{approver}' is not an approver of job '{job_id}' here")
        if approver == self.requester:
            raise PolicyError(f"'{approver}' asked for job '{job_id}' and may not approve it")
        if (decision.node, decision.job_id, decision.spec_digest) != (node, job_id, self.digest):
            raise PolicyError(f"the decision is for another node, job or job spec than job "
                              f"'{job_id}' on '{node}' (spec digest {self.digest})")
        if now >= self.deadline:
            raise PolicyError(f"job '{job_id}' passed its deadline {iso(self.deadline)}")
        if self.made[approver] >= MAX_DECISIONS:
            raise PolicyError(f"'{approver}' made {MAX_DECISIONS} decisions on job '{job_id}' "
                              "already; no more are taken")
        decided, expires = decision.times()
        if not now - CLOCK_SKEW_S <= decided <= now + FUTURE_SKEW_S:
            raise PolicyError(f"the decision's time must be within {CLOCK_SKEW_S:g} s before "
                              f"and {FUTURE_SKEW_S:g} s after this node's clock ({iso(now)})")
        earlier = self.decisions.get(approver)
        if earlier is not None and decided <= earlier.decided_at:
            raise PolicyError(f"'{approver}' decided on job '{job_id}' later than this "
                              "decision's time; a decision replaces only an earlier one")
        if decision.decision == "approve":
            longest = self.consent_hours(approver)
            if not decided < expires <= decided + longest * 3600 + 1e-3:
                raise PolicyError(f"an approval of job '{job_id}' expires after it is given "
                                  f"and within {longest:g} hours (consent_hours)")
        elif expires != decided:
            raise PolicyError("a rejection or withdrawal expires when it is made")
        if decision.decision == "withdraw" and (earlier is None
                                                or earlier.decision.decision != "approve"):
            raise PolicyError(f"'{approver}' has no approval of job '{job_id}' to withdraw")
        return decided, expires


def decision_problems(entries: Iterable[Any], node: str, ca_pem: bytes | None) -> list[str]:
    """What an auditor finds wrong with the decisions a node's ledger records (entries with
    event `approved`, `rejected` or `withdrawn`): each must be for this node and the job it
    is filed under, signed by the key of the certificate recorded with it, that certificate
    issued to the approver it names in the approver role (by the CA, when given); and every
    approval a terminal entry says its job ran on must be one of them. Nothing here
    trusts the node."""
    from invisible.text import printable

    ca = x509.load_pem_x509_certificate(ca_pem) if ca_pem is not None else None
    problems: list[str] = []
    recorded: set[tuple[str, str]] = set()  # (job, signature) of each genuine approval
    for entry in entries:
        where = f"entry {entry.seq} (job '{entry.job_id}')"
        if entry.event in EVENTS.values():
            body = entry.body
            try:
                decision = Decision.parse(canonical_json(body.get("decision")).decode())
                certificate = str(body.get("certificate", "")).encode()
                names = _dns_names(certificate)
                signed = decision.signed_by(certificate, bytes.fromhex(str(body.get(
                    "signature", ""))))
                issued = ca is None or _issued_by(certificate, ca)
            except (PolicyError, ValueError, TypeError):
                problems.append(f"{where}: a decision that cannot be read")
                continue
            why = ("is not signed by the key of its certificate" if not signed
                   else "has a certificate the CA did not issue" if not issued
                   else "has a certificate that is not this approver's"
                   if f"{body.get('approver')}.{APPROVER_SUFFIX}" not in names
                   else "is for another node or job"
                   if (decision.node, decision.job_id) != (node, entry.job_id)
                   else f"is filed as {entry.event}" if EVENTS[decision.decision] != entry.event
                   else None)
            if why is not None:
                problems.append(f"{where}: the decision of "
                                f"'{printable(str(body.get('approver')), 64)}' {why}")
            elif decision.decision == "approve":
                recorded.add((entry.job_id, str(body["signature"])))
        for consent in entry.body.get("approvals", []) if isinstance(entry.body, dict) else []:
            if (entry.job_id, consent.get("signature")) not in recorded:
                problems.append(f"{where}: ran on an approval by "
                                f"'{printable(str(consent.get('approver')), 64)}' that no "
                                "genuine decision recorded before it gave")
    return problems


def _dns_names(certificate_pem: bytes) -> list[str]:
    """The DNS names a certificate carries: an identity's is ``<id>.<role>.invisible``
    (see invisible.net.pki)."""
    try:
        san = x509.load_pem_x509_certificate(certificate_pem).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.DNSName))


def _issued_by(certificate_pem: bytes, ca: x509.Certificate) -> bool:
    try:
        x509.load_pem_x509_certificate(certificate_pem).verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def clock() -> float:
    return datetime.now(UTC).timestamp()
