"""Every rule of a dataset's and a node's policy, and every message that names a broken one.

Guards `invisible.metering.policy` key by key: what each TOML key parses to (and its
default), the exact boundary of every numeric rule, the error that names the file, table
and key when a value is wrong, and each refusal's rule, party and wording. An operator reads
these messages to fix a config, and a requester reads a refusal to learn which rule (never
which data) stopped the job, so their wording is tested as well as their type.
"""

from __future__ import annotations

import pytest

from invisible.errors import ConfigError
from invisible.metering.policy import (
    AllowRule,
    DatasetPolicy,
    NodePolicy,
    Refusal,
    UseRequest,
    authorise,
    authorise_without_data,
    group_problem,
    parse_node_policy,
    parse_policy,
    quota_problem,
    usable_columns,
)

WHERE = "bank.toml [datasets.loans.policy]"
RULE = {"requesters": ["analyst"], "kinds": ["secure_sum"], "columns": ["amount"]}


def request(**changes) -> UseRequest:
    base = dict(job_id="j", requester="analyst", kind="secure_sum", dataset="loans",
                columns=("amount",), rows=100, smallest_cell=100)
    return UseRequest(**{**base, **changes})


def test_every_key_parses_to_its_field():
    table = {"allow": [{**RULE, "jobs_per_day": 3, "rows_per_day": 400}],
             "min_rows": 1, "recipients": ["requester", "bank"], "jobs_per_day": 0,
             "rows_per_day": 7, "out_of_bound": "refuse", "alignment_days": 1,
             "two_party": True, "group": ["bank", "telco"]}
    assert parse_policy(table, WHERE) == DatasetPolicy(
        allow=(AllowRule(frozenset({"analyst"}), frozenset({"secure_sum"}),
                         frozenset({"amount"}), 3, 400),),
        min_rows=1, recipients=frozenset({"requester", "bank"}), jobs_per_day=0,
        rows_per_day=7, out_of_bound="refuse", alignment_days=1, two_party=True,
        group=frozenset({"bank", "telco"}))


def test_an_empty_policy_allows_nothing_and_has_the_documented_defaults():
    assert parse_policy({}, WHERE) == DatasetPolicy(
        allow=(), min_rows=10, recipients=frozenset({"requester"}), jobs_per_day=None,
        rows_per_day=None, out_of_bound="clip", alignment_days=30, two_party=False, group=None)


@pytest.mark.parametrize(("table", "message"), [
    ([], f"{WHERE} must be a table"),
    ({"k": 5, "max_rows": 1, "min_rows": 3}, f"{WHERE} has unknown key(s) k, max_rows"),
    ({"allow": ["analyst"]}, f"{WHERE}.allow[0] must be a table"),
    ({"allow": [RULE, {**RULE, "rows": 1, "ids": 2}]},
     f"{WHERE}.allow[1] has unknown key(s) ids, rows"),
    ({"allow": [{**RULE, "requesters": []}]},
     f"{WHERE}.allow[0].requesters must be a non-empty list of strings"),
    ({"allow": [{**RULE, "kinds": "secure_sum"}]},
     f"{WHERE}.allow[0].kinds must be a non-empty list of strings"),
    ({"allow": [{**RULE, "columns": ["amount", 3]}]},
     f"{WHERE}.allow[0].columns must be a non-empty list of strings"),
    ({"allow": [{**RULE, "jobs_per_day": -1}]},
     f"{WHERE}.allow[0].jobs_per_day must be a non-negative integer"),
    ({"allow": [{**RULE, "rows_per_day": True}]},
     f"{WHERE}.allow[0].rows_per_day must be a non-negative integer"),
    ({"min_rows": 0}, f"{WHERE}.min_rows must be a positive integer"),
    ({"min_rows": True}, f"{WHERE}.min_rows must be a positive integer"),
    ({"min_rows": 2.5}, f"{WHERE}.min_rows must be a positive integer"),
    ({"recipients": "requester"}, f"{WHERE}.recipients must be a non-empty list of strings"),
    ({"out_of_bound": "wrap"}, f"{WHERE}.out_of_bound must be one of clip, refuse"),
    ({"alignment_days": 0}, f"{WHERE}.alignment_days must be a positive integer"),
    ({"alignment_days": True}, f"{WHERE}.alignment_days must be a positive integer"),
    ({"alignment_days": 1.5}, f"{WHERE}.alignment_days must be a positive integer"),
    ({"two_party": "yes"}, f"{WHERE}.two_party must be true or false"),
    ({"two_party": 1}, f"{WHERE}.two_party must be true or false"),
    ({"group": []}, f"{WHERE}.group must be a non-empty list of strings"),
    ({"jobs_per_day": "5"}, f"{WHERE}.jobs_per_day must be a non-negative integer"),
    ({"rows_per_day": -1}, f"{WHERE}.rows_per_day must be a non-negative integer"),
])
def test_a_wrong_value_is_named_with_its_file_table_and_key(table, message):
    with pytest.raises(ConfigError) as refused:
        parse_policy(table, WHERE)
    assert str(refused.value) == message


def test_the_node_policy_parses_and_names_what_is_wrong():
    where = "dealer.toml [policy]"
    assert parse_node_policy({"requesters": ["*"], "kinds": ["connectivity"],
                              "jobs_per_day": 0, "max_bytes": 64}, where) == NodePolicy(
        frozenset({"*"}), frozenset({"connectivity"}), 0, 64)
    for table, message in [
        ("all", f"{where} must be a table"),
        ({"requesters": ["*"], "kinds": ["*"], "rows": 1, "k": 2},
         f"{where} has unknown key(s) k, rows"),
        ({"kinds": ["*"]}, f"{where}.requesters must be a non-empty list of strings"),
        ({"requesters": ["*"], "kinds": [""] * 0}, f"{where}.kinds must be a non-empty list "
                                                   "of strings"),
        ({"requesters": ["*"], "kinds": ["*"], "jobs_per_day": -2},
         f"{where}.jobs_per_day must be a non-negative integer"),
        ({"requesters": ["*"], "kinds": ["*"], "max_bytes": False},
         f"{where}.max_bytes must be a non-negative integer"),
    ]:
        with pytest.raises(ConfigError) as refused:
            parse_node_policy(table, where)
        assert str(refused.value) == message


def refusal_of(action) -> Refusal:
    with pytest.raises(Refusal) as refused:
        action()
    return refused.value


def test_a_refusal_carries_its_party_rule_and_detail_and_no_one_alike_yet():
    refusal = Refusal("bank", "quota", "jobs per day (limit 3) would be exceeded")
    assert (refusal.party, refusal.rule, refusal.detail, refusal.alike) == (
        "bank", "quota", "jobs per day (limit 3) would be exceeded", ())
    assert str(refusal) == "rule 'quota': jobs per day (limit 3) would be exceeded"


def test_jobs_without_data_are_refused_by_the_rule_that_stops_them_at_the_exact_size():
    policy = NodePolicy(frozenset({"analyst"}), frozenset({"bandwidth"}), max_bytes=1000)
    authorise_without_data("dealer", policy, "analyst", "bandwidth", 1000)
    for args, rule, detail in [
        ((None, "analyst", "bandwidth", 1), "no-policy",
         "this node has no [policy] for jobs that use none of its data; they are refused"),
        ((policy, "mallory", "bandwidth", 1), "not-allowed",
         "'mallory' may not run bandwidth on this node"),
        ((policy, "analyst", "connectivity", 1), "not-allowed",
         "'analyst' may not run connectivity on this node"),
        ((policy, "analyst", "bandwidth", 1001), "size",
         "a bandwidth job may move at most 1000 bytes here"),
    ]:
        refusal = refusal_of(lambda a=args: authorise_without_data("dealer", *a))
        assert (refusal.party, refusal.rule, refusal.detail) == ("dealer", rule, detail)
    anyone = NodePolicy(frozenset({"*"}), frozenset({"*"}))
    authorise_without_data("dealer", anyone, "mallory", "connectivity", 10**12)


def test_requests_are_refused_by_the_rule_that_stops_them_naming_no_data():
    policy = parse_policy({"allow": [RULE], "recipients": ["requester", "telco"]}, WHERE)
    assert authorise("bank", policy, request()) == policy.allow[0]
    for policy_, changes, rule, detail in [
        (None, {}, "no-policy", "dataset 'loans' has no policy; nothing is allowed on it"),
        (policy, {"requester": "mallory"}, "not-allowed",
         "'mallory' may not run secure_sum on dataset 'loans'"),
        (policy, {"columns": ("amount", "age", "zip")}, "columns",
         "'analyst' may not use column(s) age, amount, zip of dataset 'loans'"),
        (policy, {"two_party": True}, "two-party",
         "a secure_sum job between two parties gives each the other's contribution (the "
         "combined value minus its own): dataset 'loans' allows it only with two_party = "
         "true in its policy"),
        (policy, {"recipient": "hospital"}, "recipients",
         "outputs from dataset 'loans' may not go to 'hospital'"),
    ]:
        refusal = refusal_of(lambda p=policy_, c=changes: authorise("bank", p, request(**c)))
        assert (refusal.party, refusal.rule, refusal.detail) == ("bank", rule, detail)


def test_recipients_the_owner_itself_and_the_requester_too():
    only_requester = parse_policy({"allow": [RULE]}, WHERE)
    authorise("bank", only_requester, request(recipient="bank"))  # stays at its owner
    telco = parse_policy({"allow": [RULE], "recipients": ["telco"]}, WHERE)
    authorise("bank", telco, request(recipient="telco"))
    refusal = refusal_of(lambda: authorise("bank", telco, request(recipient="telco",
                                                                  requester_too=True)))
    assert refusal.detail == "outputs from dataset 'loans' may not go to 'requester'"
    anyone = parse_policy({"allow": [RULE], "recipients": ["*"]}, WHERE)
    authorise("bank", anyone, request(recipient="hospital", requester_too=True))


def test_a_group_is_the_policy_s_or_else_the_first_job_s():
    group = ("bank", "telco")
    free = parse_policy({"allow": [RULE]}, WHERE)
    assert group_problem(free, request(group=None), [("bank", "x")]) is None
    assert group_problem(free, request(group=group), []) is None
    assert group_problem(free, request(group=("telco", "bank")), [group, ("bank", "x")]) is None
    detail = ("dataset 'loans' is combined by secure_sum with parties bank, telco only: with "
              "other groups, the difference of two results would give one party's "
              "contribution (an owner who means to change the group sets `group` in the "
              "dataset's policy)")
    assert group_problem(free, request(group=("bank", "x")), [group, ("bank", "x")]) == (
        "group", detail)
    fixed = parse_policy({"allow": [RULE], "group": ["bank", "telco"]}, WHERE)
    assert group_problem(fixed, request(group=group), [("bank", "x")]) is None
    assert group_problem(fixed, request(group=("bank", "x")), [("bank", "x")]) == (
        "group", detail)


@pytest.mark.parametrize(("field", "used", "what"), [
    ("rule_jobs", (2, 0), "jobs per day for 'analyst' on dataset 'loans' (limit 3)"),
    ("rule_rows", (0, 300), "rows per day for 'analyst' on dataset 'loans' (limit 400)"),
    ("jobs", (2, 0), "jobs per day on dataset 'loans' (limit 3)"),
    ("rows", (0, 300), "rows per day on dataset 'loans' (limit 400)"),
])
def test_each_quota_allows_exactly_its_limit_and_names_itself_beyond_it(field, used, what):
    rule = AllowRule(frozenset({"analyst"}), frozenset({"*"}), frozenset({"*"}),
                     3 if field == "rule_jobs" else None, 400 if field == "rule_rows" else None)
    policy = DatasetPolicy((rule,), jobs_per_day=3 if field == "jobs" else None,
                           rows_per_day=400 if field == "rows" else None)
    mine, overall = (used, (0, 0)) if field.startswith("rule") else ((0, 0), used)
    assert quota_problem(policy, rule, request(rows=100), mine, overall) is None  # at the limit
    more = (used[0] + 1, used[1] + 1)
    mine, overall = (more, (0, 0)) if field.startswith("rule") else ((0, 0), more)
    assert quota_problem(policy, rule, request(rows=100), mine, overall) == (
        "quota", f"{what} would be exceeded")


def test_a_requester_is_told_only_the_columns_some_rule_lets_it_use():
    declared = ["id", "spend", "age", "diagnosis"]
    policy = parse_policy({"allow": [
        {"requesters": ["analyst"], "kinds": ["secure_sum"], "columns": ["spend"]},
        {"requesters": ["analyst"], "kinds": ["psi"], "columns": ["id"]},
        {"requesters": ["*"], "kinds": ["statistics"], "columns": ["age"]},
        {"requesters": ["auditor"], "kinds": ["*"], "columns": ["*"]},
    ]}, WHERE)
    assert usable_columns(policy, "analyst", declared) == ["id", "spend", "age"]
    assert usable_columns(policy, "marketing", declared) == ["age"]  # the "*" rule only
    assert usable_columns(policy, "auditor", declared) == declared
    assert usable_columns(None, "auditor", declared) == []  # no policy: nothing is usable
