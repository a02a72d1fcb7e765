"""Per-dataset policy: who may run which job kinds on which columns, how much, and for whom.

In a party's TOML, under each dataset::

    [datasets.customers.policy]
    min_rows = 10                   # k: every released cell aggregates at least k rows here
    recipients = ["requester"]      # who may receive outputs: the requester, or named parties
    jobs_per_day = 500              # the dataset overall, whoever asks (UTC days)
    rows_per_day = 1000000
    out_of_bound = "clip"           # or "refuse": see invisible.protocols.bound_check
    alignment_days = 30             # how long a set intersection's rows are kept here

    [[datasets.customers.policy.allow]]
    requesters = ["analyst"]        # certificate identities; "*" for any coordinator
    kinds = ["secure_sum"]          # "*" for any kind
    columns = ["monthly_spend", "district"]   # "*" for any column
    jobs_per_day = 100              # per requester
    rows_per_day = 100000
    rho_per_day = 0.5               # privacy budget per requester (zCDP rho), all its jobs here
    rho_total = 5.0
    require_dp = true               # this rule allows only jobs that declare a privacy cost

    [[datasets.customers.policy.approval]]
    approvers = ["dpo"]             # jobs it holds wait for these approvers' consent
    kinds = ["vertical_lr"]         # (see invisible.metering.approvals)

Privacy budgets for the dataset overall sit beside `jobs_per_day`
(``rho_per_day``, ``rho_total``); see :mod:`invisible.metering.privacy` for
what a declared rho buys and how it is charged.

A dataset without a policy table refuses every job: nothing is allowed by
default. A refusal names the party's rule, never the data: in particular
not how many rows a cell has. The rules on the request (requester, kind,
columns, recipient) are checked before anything reads data; the rules on
the data (the k threshold) only for an allowed job whose quota is reserved,
so such a refusal is charged like a job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from invisible.errors import ConfigError, PolicyError
from invisible.metering.approvals import ApprovalRule, parse_approval_rules
from invisible.metering.approvals import strings as _strings
from invisible.metering.billing import PriceList, parse_prices
from invisible.metering.privacy import budget_units, rho_of

ANY = "*"
REQUESTER = "requester"
DEFAULT_MIN_ROWS = 10
#: What a policy may do with values beyond a job's declared bound.
OUT_OF_BOUND = ("clip", "refuse")
DEFAULT_ALIGNMENT_DAYS = 30


class Refusal(PolicyError):
    """A job refused by a party's policy; `rule` names the rule."""

    def __init__(self, party: str, rule: str, detail: str) -> None:
        super().__init__(f"rule '{rule}': {detail}")
        self.party = party
        self.rule = rule
        self.detail = detail
        #: The parties that reach the same refusal by themselves (need not be told of it).
        self.alike: tuple[str, ...] = ()


@dataclass(frozen=True)
class AllowRule:
    requesters: frozenset[str]
    kinds: frozenset[str]
    columns: frozenset[str]
    jobs_per_day: int | None = None
    rows_per_day: int | None = None
    #: Privacy budgets of each requester it names, in nano-rho (all its jobs on the dataset).
    rho_per_day: int | None = None
    rho_total: int | None = None
    #: It allows only jobs that declare a privacy cost (their releases carry noise).
    require_dp: bool = False

    def matches(self, requester: str, kind: str) -> bool:
        return ((ANY in self.requesters or requester in self.requesters)
                and (ANY in self.kinds or kind in self.kinds))


def usable_columns(policy: DatasetPolicy | None, requester: str,
                   declared: list[str]) -> list[str]:
    """The declared columns some rule lets `requester` use, in declared order (none without
    a policy): what it may be told a dataset holds."""
    if policy is None:
        return []
    allowed: set[str] = set()
    for rule in policy.allow:
        if ANY in rule.requesters or requester in rule.requesters:
            allowed |= set(declared) if ANY in rule.columns else set(rule.columns)
    return [c for c in declared if c in allowed]


@dataclass(frozen=True)
class DatasetPolicy:
    allow: tuple[AllowRule, ...] = ()
    min_rows: int = DEFAULT_MIN_ROWS
    recipients: frozenset[str] = frozenset({REQUESTER})
    jobs_per_day: int | None = None
    rows_per_day: int | None = None
    #: Values beyond a job's declared bound: "clip" them to it, or "refuse" the job (every
    #: party alike, charged, naming neither party nor direction).
    out_of_bound: str = "clip"
    #: How long an alignment (the rows of a set intersection) made from it is kept.
    alignment_days: int = DEFAULT_ALIGNMENT_DAYS
    #: Privacy budgets of the dataset overall, whoever asks, in nano-rho.
    rho_per_day: int | None = None
    rho_total: int | None = None
    #: Whether jobs whose combined outputs, learned by the other party, involve only one
    #: other party may run (then that party learns this one's contribution by subtraction).
    two_party: bool = False
    #: The only parties (this one among them) its data may be combined with by a kind whose
    #: outputs, differenced over groups, would give one party's contribution (horizontal_lr);
    #: None: the group of the first such job, as the ledger records it.
    group: frozenset[str] | None = None
    #: What a job on it costs (see invisible.metering.billing); None: jobs are not priced.
    prices: PriceList | None = None
    #: Jobs it holds until approvers consent (see invisible.metering.approvals).
    approval: tuple[ApprovalRule, ...] = ()

    @property
    def refuses_out_of_bound(self) -> bool:
        return self.out_of_bound == "refuse"


@dataclass(frozen=True)
class UseRequest:
    """What a job would do with one dataset at this party, known before it runs."""

    job_id: str
    requester: str
    kind: str
    dataset: str
    columns: tuple[str, ...]
    rows: int
    #: Rows in the smallest cell the job would release (None: releases no aggregate).
    smallest_cell: int | None = None
    recipient: str | None = None  # None: the requester itself
    #: With a recipient party: whether the requester receives the outputs too.
    requester_too: bool = False
    #: Its outputs combine this party's data with one other party's only, and that party
    #: learns them (the other party's contribution follows by subtraction).
    two_party: bool = False
    #: The parties whose data it combines with this party's, for a kind whose outputs,
    #: differenced over jobs on other groups, would give one party's contribution
    #: (None: not such a kind).
    group: tuple[str, ...] | None = None
    #: The privacy cost it declares, in nano-rho (0: its releases carry no noise).
    rho: int = 0


@dataclass(frozen=True)
class Budget:
    """One privacy budget that binds a request: its limit in nano-rho, whose spending counts
    against it (a requester's, or None: everyone's), per day or in all, and what a refusal
    calls it."""

    limit: int
    requester: str | None
    daily: bool
    what: str


@dataclass(frozen=True)
class NodePolicy:
    """A node's rule for jobs that use none of its data (diagnostics, a dealer's service).

    In a party's (or dealer's) TOML::

        [policy]
        requesters = ["analyst"]     # "*" for any coordinator
        kinds = ["connectivity", "statistics"]   # "*" for any kind
        jobs_per_day = 100           # per requester, every such job counted
        max_bytes = 268435456        # the largest transfer one job may declare

    Without it, such jobs are refused: nothing is allowed by default.
    """

    requesters: frozenset[str]
    kinds: frozenset[str]
    jobs_per_day: int | None = None
    max_bytes: int | None = None
    #: What such a job costs (see invisible.metering.billing); None: not priced.
    prices: PriceList | None = None


def parse_node_policy(table: Any, where: str) -> NodePolicy:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - {"requesters", "kinds", "jobs_per_day", "max_bytes", "prices"})
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(unknown)}")
    return NodePolicy(_strings(table.get("requesters"), f"{where}.requesters"),
                      _strings(table.get("kinds"), f"{where}.kinds"),
                      _limit(table, "jobs_per_day", where), _limit(table, "max_bytes", where),
                      _prices(table, where))


def authorise_without_data(party: str, policy: NodePolicy | None, requester: str, kind: str,
                           traffic: int) -> None:
    """A job that uses no data here, against the node's own policy; or a Refusal."""
    if policy is None:
        raise Refusal(party, "no-policy", "this node has no [policy] for jobs that use none of "
                      "its data; they are refused")
    if not ((ANY in policy.requesters or requester in policy.requesters)
            and (ANY in policy.kinds or kind in policy.kinds)):
        raise Refusal(party, "not-allowed", f"'{requester}' may not run {kind} on this node")
    if policy.max_bytes is not None and traffic > policy.max_bytes:
        raise Refusal(party, "size", f"a {kind} job may move at most {policy.max_bytes} bytes "
                      "here")


def _limit(table: dict[str, Any], key: str, where: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}.{key} must be a non-negative integer")
    return value


def parse_policy(table: Any, where: str) -> DatasetPolicy:
    """A policy from its TOML table; `where` names the file and table in errors."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    known = {"allow", "min_rows", "recipients", "jobs_per_day", "rows_per_day", "out_of_bound",
             "alignment_days", "two_party", "group", "rho_per_day", "rho_total", "prices",
             "approval"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(unknown)}")
    rules = []
    for index, rule in enumerate(table.get("allow", [])):
        at = f"{where}.allow[{index}]"
        if not isinstance(rule, dict):
            raise ConfigError(f"{at} must be a table")
        extra = sorted(set(rule) - {"requesters", "kinds", "columns", "jobs_per_day",
                                    "rows_per_day", "rho_per_day", "rho_total", "require_dp"})
        if extra:
            raise ConfigError(f"{at} has unknown key(s) {', '.join(extra)}")
        rules.append(AllowRule(
            _strings(rule.get("requesters"), f"{at}.requesters"),
            _strings(rule.get("kinds"), f"{at}.kinds"),
            _strings(rule.get("columns"), f"{at}.columns"),
            _limit(rule, "jobs_per_day", at), _limit(rule, "rows_per_day", at),
            _budget(rule, "rho_per_day", at), _budget(rule, "rho_total", at),
            _flag(rule, "require_dp", at),
        ))
    budgeted = any(k in table for k in ("rho_per_day", "rho_total"))
    for index, rule in enumerate(rules):
        if rule.require_dp and not (budgeted or rule.rho_per_day is not None
                                    or rule.rho_total is not None):
            raise ConfigError(f"{where}.allow[{index}] has require_dp without a privacy budget "
                              "(rho_per_day or rho_total, on the rule or the dataset): without "
                              "one a job may declare a rho so large that its noise is nothing")
    min_rows = table.get("min_rows", DEFAULT_MIN_ROWS)
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
        raise ConfigError(f"{where}.min_rows must be a positive integer")
    recipients = (_strings(table["recipients"], f"{where}.recipients")
                  if "recipients" in table else frozenset({REQUESTER}))
    out_of_bound = table.get("out_of_bound", "clip")
    if out_of_bound not in OUT_OF_BOUND:
        raise ConfigError(f"{where}.out_of_bound must be one of {', '.join(OUT_OF_BOUND)}")
    days = table.get("alignment_days", DEFAULT_ALIGNMENT_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ConfigError(f"{where}.alignment_days must be a positive integer")
    group = _strings(table["group"], f"{where}.group") if "group" in table else None
    return DatasetPolicy(tuple(rules), min_rows, recipients,
                         _limit(table, "jobs_per_day", where), _limit(table, "rows_per_day", where),
                         out_of_bound, days, _budget(table, "rho_per_day", where),
                         _budget(table, "rho_total", where), _flag(table, "two_party", where),
                         group, _prices(table, where),
                         parse_approval_rules(table.get("approval", []), f"{where}.approval"))


def _prices(table: dict[str, Any], where: str) -> PriceList | None:
    return parse_prices(table["prices"], f"{where}.prices") if "prices" in table else None


def _budget(table: dict[str, Any], key: str, where: str) -> int | None:
    """A privacy budget in nano-rho (None if not set)."""
    return budget_units(table[key], f"{where}.{key}") if key in table else None


def _flag(table: dict[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be true or false")
    return value


def authorise(party: str, policy: DatasetPolicy | None, request: UseRequest) -> AllowRule:
    """The rule that allows the request, from the request and the policy alone (no data,
    no ledger); or a Refusal."""
    if policy is None:
        raise Refusal(party, "no-policy", f"dataset '{request.dataset}' has no policy; "
                      "nothing is allowed on it")
    rules = [r for r in policy.allow if r.matches(request.requester, request.kind)]
    if not rules:
        raise Refusal(party, "not-allowed", f"'{request.requester}' may not run "
                      f"{request.kind} on dataset '{request.dataset}'")
    rules = [r for r in rules if ANY in r.columns or set(request.columns) <= r.columns]
    if not rules:
        raise Refusal(party, "columns", f"'{request.requester}' may not use column(s) "
                      f"{', '.join(sorted(request.columns))} of dataset '{request.dataset}'")
    rules = [r for r in rules if request.rho or not r.require_dp]
    if not rules:
        raise Refusal(party, "dp-required", f"'{request.requester}' may run {request.kind} on "
                      f"dataset '{request.dataset}' only with differential privacy: the job "
                      "must declare a privacy cost (rho)")
    if request.rho and policy.refuses_out_of_bound:
        raise Refusal(party, "dp-clip", f"dataset '{request.dataset}' refuses values beyond a "
                      "job's bound (out_of_bound = \"refuse\"): that refusal is an exact answer "
                      "no noise covers, so it takes no job with a privacy cost")
    if request.two_party and not policy.two_party:
        raise Refusal(party, "two-party", f"a {request.kind} job between two parties gives each "
                      "the other's contribution (the combined value minus its own): dataset "
                      f"'{request.dataset}' allows it only with two_party = true in its policy")
    receivers = [REQUESTER if request.recipient is None else request.recipient]
    if request.requester_too and request.recipient is not None:
        receivers.append(REQUESTER)
    for recipient in receivers:
        if recipient == party:  # what stays at its owner's node is no release
            continue
        if recipient not in policy.recipients and ANY not in policy.recipients:
            raise Refusal(party, "recipients", f"outputs from dataset '{request.dataset}' may "
                          f"not go to '{recipient}'")
    return rules[0]


def group_problem(policy: DatasetPolicy, request: UseRequest,
                  earlier: Iterable[tuple[str, ...]]) -> tuple[str, str] | None:
    """(rule, detail) if a job combines this dataset with another group of parties than the
    policy's `group`, or than the earlier jobs of its kind (the first one's group)."""
    if request.group is None:
        return None
    expected = policy.group
    if expected is None:
        expected = next((frozenset(g) for g in earlier), None)
    if expected is None or frozenset(request.group) == expected:
        return None
    return "group", (f"dataset '{request.dataset}' is combined by {request.kind} with parties "
                     f"{', '.join(sorted(expected))} only: with other groups, the difference of "
                     "two results would give one party's contribution (an owner who means to "
                     "change the group sets `group` in the dataset's policy)")


def threshold_problem(policy: DatasetPolicy, request: UseRequest) -> tuple[str, str] | None:
    """(rule, detail) if a released cell would aggregate fewer than k rows (a data check:
    only for an allowed, reserved job, and the detail gives no count)."""
    if request.smallest_cell is not None and request.smallest_cell < policy.min_rows:
        return "k-threshold", (f"a released cell would aggregate fewer than {policy.min_rows} "
                               f"rows of dataset '{request.dataset}'")
    return None


def quota_problem(policy: DatasetPolicy, rule: AllowRule, request: UseRequest,
                  by_requester: tuple[int, int], overall: tuple[int, int]) -> tuple[str, str] | None:
    """(rule, detail) if reserving this request would pass a quota; usage is (jobs, rows) today."""
    checks: Sequence[tuple[int | None, int, str]] = [
        (rule.jobs_per_day, by_requester[0] + 1,
         f"jobs per day for '{request.requester}' on dataset '{request.dataset}'"),
        (rule.rows_per_day, by_requester[1] + request.rows,
         f"rows per day for '{request.requester}' on dataset '{request.dataset}'"),
        (policy.jobs_per_day, overall[0] + 1, f"jobs per day on dataset '{request.dataset}'"),
        (policy.rows_per_day, overall[1] + request.rows,
         f"rows per day on dataset '{request.dataset}'"),
    ]
    for limit, would_be, what in checks:
        if limit is not None and would_be > limit:
            return "quota", f"{what} (limit {limit}) would be exceeded"
    return None


def requester_budgets(policy: DatasetPolicy, requester: str) -> tuple[int | None, int | None]:
    """A requester's privacy budgets on the dataset, per day and in all: the tightest of every
    rule that names it (or any requester), whichever rule allows a job, since privacy loss
    adds up across all its jobs."""
    rules = [r for r in policy.allow if ANY in r.requesters or requester in r.requesters]
    return (min((r.rho_per_day for r in rules if r.rho_per_day is not None), default=None),
            min((r.rho_total for r in rules if r.rho_total is not None), default=None))


def privacy_budgets(policy: DatasetPolicy, request: UseRequest) -> list[Budget]:
    """The budgets that bind `request` (none for one that costs nothing): the requester's per
    day and in all (see :func:`requester_budgets`), then the dataset's per day and in all."""
    if not request.rho:
        return []
    per_day, in_all = requester_budgets(policy, request.requester)
    who, dataset = request.requester, request.dataset
    candidates = (
        (per_day, who, True, f"privacy budget per day of '{who}' on dataset '{dataset}'"),
        (in_all, who, False, f"privacy budget of '{who}' on dataset '{dataset}'"),
        (policy.rho_per_day, None, True, f"privacy budget per day of dataset '{dataset}'"),
        (policy.rho_total, None, False, f"privacy budget of dataset '{dataset}'"),
    )
    return [Budget(limit, whose, daily, what)
            for limit, whose, daily, what in candidates if limit is not None]


def privacy_problem(request: UseRequest,
                    spent: Iterable[tuple[Budget, int]]) -> tuple[str, str] | None:
    """(rule, detail) if the request's privacy cost would pass a budget, given what each
    budget that binds it has spent; the detail names the budget, never what was spent."""
    for budget, used in spent:
        if used + request.rho > budget.limit:
            return "privacy-budget", f"{budget.what} (rho {rho_of(budget.limit):g}) would be exceeded"
    return None
