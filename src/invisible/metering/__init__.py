"""Metering: policy (who may use what, how much), the signed ledger, receipts, reports.

Below `net` and above `protocols`: it knows requesters and parties only by
their id strings.
"""
