"""Every kind's parameters, from their declarations: a reference and a job-file template.

`invisible job kinds` prints :func:`kinds_text`; the README's reference of
job kinds is :func:`kinds_markdown` (a test keeps the two the same);
`invisible job template KIND` prints :func:`job_template`, a commented job
file whose required values are examples for the example federation in
``parties/`` (a bank, a hospital, a telco and a dealer).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from invisible.coordinator.tomlvalues import toml_value
from invisible.kinds.params import FieldSpec
from invisible.kinds.registry import KINDS, AnyKind, find_kind

#: The example federation's parties, as the declarations' examples name them.
EXAMPLE_PARTIES = ("bank", "hospital", "telco")
EXAMPLE_DEALER = "dealer"


def _default_text(spec: FieldSpec) -> str:
    if spec.required:
        return "required"
    return "none" if spec.default is None else toml_value(spec.default)


def kinds_text() -> str:
    """Every registered kind with its parameters, for a terminal."""
    blocks = []
    for kind in KINDS:
        lines = [f"{kind.name} (version {kind.version}): {kind.summary}"]
        for spec in kind.params_type.fields():
            rule = f"; {spec.rule}" if spec.rule else ""
            lines.append(f"  {spec.name:<16} {spec.type_name}, {_default_text(spec)}{rule}")
            lines.append(f"  {'':<16} {spec.declaration.doc}")
        if not kind.params_type.fields():
            lines.append("  (no parameters)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def kinds_markdown() -> str:
    """The README's reference of job kinds and their parameters."""
    out = []
    for kind in KINDS:
        out += [f"#### `{kind.name}`", "", f"{kind.summary[0].upper()}{kind.summary[1:]}.", ""]
        fields = kind.params_type.fields()
        if not fields:
            out += ["No parameters.", ""]
            continue
        out += ["| parameter | type | default | rule | meaning |", "| --- | --- | --- | --- | --- |"]
        for spec in fields:
            cells = (f"`{spec.name}`", spec.type_name, _default_text(spec), spec.rule or "-",
                     spec.declaration.doc)
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _rename(value: Any, parties: Sequence[str], dealer: str) -> Any:
    """An example's party names mapped onto the federation's."""
    if isinstance(value, str):
        if value == EXAMPLE_DEALER:
            return dealer
        if value in EXAMPLE_PARTIES:
            return parties[EXAMPLE_PARTIES.index(value) % len(parties)]
    return value


def _example(spec: FieldSpec, parties: Sequence[str], dealer: str) -> Any:
    value = spec.declaration.example
    if value is None:
        value = spec.default
    if isinstance(value, list):
        return [_rename(v, parties, dealer) for v in value]
    return _rename(value, parties, dealer)


def job_template(name: str, parties: Sequence[str] = EXAMPLE_PARTIES,
                 dealer: str = EXAMPLE_DEALER, coordinator: str = "coordinator.toml") -> str:
    """A commented job file for kind `name`, runnable once its names are the federation's."""
    kind: AnyKind = find_kind(name)
    lines = [f"# {kind.name}: {kind.summary}.", f"# Run with: invisible job run {name}.job.toml",
             "", "[job]", f'kind = "{kind.name}"',
             f"coordinator = {toml_value(coordinator)}    # the coordinator's config, relative "
             "to this file",
             f"# parties = {toml_value(list(parties))}    # optional: default, the parties the "
             "parameters name (else all)"]
    inputs: dict[str, Any] | None = None
    inputs_doc = ""
    for spec in kind.params_type.fields():
        if spec.is_inputs:
            inputs_doc = spec.declaration.doc
            examples = spec.declaration.example  # per party where the example names it
            first = next(iter(examples.values()))
            inputs = {p: examples.get(p, first) for p in parties}
            continue
        value = _example(spec, parties, dealer)
        rule = f"; {spec.rule}" if spec.rule else ""
        default = "required" if spec.required else f"default: {_default_text(spec)}"
        comment = f"# {spec.declaration.doc} ({default}{rule})"
        if value is None:
            lines.append(f"# {spec.name} = ...    {comment}")
        elif spec.required:
            lines.append(f"{spec.name} = {toml_value(value)}    {comment}")
        else:
            lines.append(f"# {spec.name} = {toml_value(value)}    {comment}")
    if inputs is not None:
        lines += ["", "[inputs]", *(f"# {line}" for line in textwrap.wrap(inputs_doc, 86)),
                  *(f"{p} = {toml_value(ref)}" for p, ref in inputs.items())]
    return "\n".join(lines) + "\n"
