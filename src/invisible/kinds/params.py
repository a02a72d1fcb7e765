"""Declared job parameters: each kind declares its fields once; one parser checks them.

A kind's parameters are a frozen dataclass deriving from :class:`Params`,
each field declared with :func:`param` (a one-line doc, a default or none
for a required field, bounds, choices). The field's annotation is its type,
read strictly: a string is never a boolean or a number, a boolean is never
a number, a number is never NaN or infinite. :meth:`Params.parse` checks a
JSON object against the declaration (unknown keys, missing keys, types,
bounds, choices), then the kind's cross-field rules (:meth:`Params.check`).
The coordinator parses before any node is contacted; every node parses the
same object again. Errors name the kind, the key and what was expected.

Supported types: ``bool``, ``int``, ``float``, ``str``, any of them or
``None`` (``X | None``), ``tuple[str, ...]`` (a non-empty list; choices apply
to each element), :data:`Inputs` (per party, a dataset and a column) and
:data:`ColumnInputs` (per party, a dataset, columns and optional bounds).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar

from invisible.errors import ConfigError

R = TypeVar("R")


#: The longest name (dataset, column, party) a parameter may hold: it is recorded in ledgers
#: and receipts.
MAX_NAME_CHARS = 128


@dataclass(frozen=True)
class InputRef:
    """What one party contributes: a column of one of its datasets."""

    dataset: str
    column: str


#: Per party id, the column it contributes.
Inputs = dict[str, InputRef]

#: The most columns one party may contribute to a job.
MAX_COLUMNS = 256


@dataclass(frozen=True)
class ColumnsRef:
    """What one party contributes: columns of one of its datasets (or alignments), each
    with a public bound on |value| where the kind needs one."""

    dataset: str
    columns: tuple[str, ...]
    bounds: tuple[float, ...] | None = None
    #: The label column, for the kinds that learn.
    label: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        if self.bounds is not None:
            object.__setattr__(self, "bounds", tuple(float(b) for b in self.bounds))


#: Per party id, the columns it contributes.
ColumnInputs = dict[str, ColumnsRef]


def input_refs(inputs: Mapping[str, tuple[str, str] | InputRef]) -> Inputs:
    """{party: (dataset, column)} as InputRefs, in the caller's party order."""
    return {p: r if isinstance(r, InputRef) else InputRef(*r) for p, r in inputs.items()}


@dataclass(frozen=True)
class Param:
    """How one parameter is declared (read from a dataclass field's metadata)."""

    doc: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    #: A value for templates and docs when the field has no default.
    example: Any = None


def param(doc: str, *, default: Any = dataclasses.MISSING, ge: float | None = None,
          gt: float | None = None, le: float | None = None, lt: float | None = None,
          choices: tuple[Any, ...] | None = None, example: Any = None) -> Any:
    """Declare a parameter field; without `default` it is required."""
    return dataclasses.field(default=default, metadata={
        "param": Param(doc, ge, gt, le, lt, choices, example)})


@dataclass(frozen=True)
class FieldSpec:
    """One declared parameter, as the parser, templates and docs see it."""

    name: str
    type: Any
    declaration: Param
    default: Any = dataclasses.MISSING

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    @property
    def is_inputs(self) -> bool:
        """Whether this is an :data:`Inputs` field (per party, a dataset and a column)."""
        return typing.get_origin(self.type) is dict

    @property
    def type_name(self) -> str:
        return _type_name(self.type)

    @property
    def rule(self) -> str:
        """The bounds and choices, in words ('' if none)."""
        d, parts = self.declaration, []
        for symbol, bound in ((">=", d.ge), (">", d.gt), ("<=", d.le), ("<", d.lt)):
            if bound is not None:
                parts.append(f"{symbol} {int(bound) if float(bound).is_integer() else bound}")
        if d.choices is not None:
            parts.append("one of " + ", ".join(_show(c) for c in d.choices))
        return ", ".join(parts)


class Params(Generic[R]):
    """Base of every kind's parameters; R is the kind's result type.

    Subclasses are frozen dataclasses with a ``KIND`` class variable; they
    may override :meth:`check` (rules across fields and the job's parties)
    and :meth:`job_parties` (which parties a job of these parameters runs on).
    """

    KIND: ClassVar[str]

    def check(self, parties: tuple[str, ...]) -> None:
        """Rules across fields and against the job's parties; raise ConfigError."""

    def job_parties(self, available: tuple[str, ...]) -> tuple[str, ...]:
        """The parties the job runs on, in protocol order (default: all available)."""
        return available

    @classmethod
    def fields(cls) -> list[FieldSpec]:
        return _fields(cls)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], parties: tuple[str, ...]) -> Self:
        """Check `raw` (a JSON object) against the declaration and the job's parties."""
        parsed = cls.read(raw)
        parsed.check(tuple(parties))
        return parsed

    @classmethod
    def read(cls, raw: Mapping[str, Any]) -> Self:
        """Check `raw` against the declaration only (types, bounds, choices; no parties)."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{cls.KIND}: parameters must be a table of key = value")
        specs = {f.name: f for f in cls.fields()}
        unknown = sorted(set(raw) - set(specs))
        if unknown:
            raise ConfigError(f"{cls.KIND}: unknown parameter(s) {', '.join(map(_name, unknown))} "
                              f"(it takes: {', '.join(specs) or 'none'})")
        values = {}
        for name, spec in specs.items():
            if name not in raw or (raw[name] is None and not spec.required):
                if spec.required:
                    raise ConfigError(f"{cls.KIND}: '{name}' is required ({spec.declaration.doc})")
                values[name] = spec.default
                continue
            values[name] = _read(cls.KIND, spec, raw[name])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The JSON object :meth:`parse` reads back to these parameters."""
        out = {}
        for spec in self.fields():
            value = getattr(self, spec.name)
            if isinstance(value, tuple):
                value = list(value)
            elif _holds_columns(spec.type):
                value = {p: {"dataset": r.dataset, "columns": list(r.columns)}
                         | ({} if r.bounds is None else {"bounds": list(r.bounds)})
                         | ({} if r.label is None else {"label": r.label})
                         for p, r in value.items()}
            elif isinstance(value, dict):  # Inputs: InputRefs, or (dataset, column) pairs
                value = {p: {"dataset": r.dataset, "column": r.column}
                         for p, r in input_refs(value).items()}
            out[spec.name] = value
        return out


_FIELDS: dict[type, list[FieldSpec]] = {}


def _fields(cls: type) -> list[FieldSpec]:
    if cls not in _FIELDS:
        _FIELDS[cls] = _declared_fields(cls)
    return _FIELDS[cls]


def _declared_fields(cls: type) -> list[FieldSpec]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        declaration = f.metadata.get("param")
        if declaration is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with param()")
        out.append(FieldSpec(f.name, hints[f.name], declaration, f.default))
    return out


def _optional_inner(kind: Any) -> Any | None:
    """X for `X | None`, else None."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return None


def _type_name(kind: Any) -> str:
    inner = _optional_inner(kind)
    if inner is not None:
        return f"{_type_name(inner)} or none"
    if _holds_columns(kind):
        return "per party: {dataset, columns, bounds or label}"
    if kind is Inputs or typing.get_origin(kind) is dict:
        return "per party: {dataset, column}"
    if typing.get_origin(kind) is tuple:
        return "list of strings"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}[kind]


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _name(value: Any) -> str:
    """A key or party name from a request, quoted and cut short: never a forged log line."""
    text = repr(str(value))
    return text if len(text) <= 42 else text[:39] + "...'"


def _describe(value: Any) -> str:
    """What was given, for an error message (parameters are public, never data)."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table", type(None): "nothing"}
    text = repr(value) if isinstance(value, str) else (
        _show(value) if isinstance(value, bool | int | float) else "")
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{names.get(type(value), type(value).__name__)}{' ' + text if text else ''}"


def _read(kind_name: str, spec: FieldSpec, value: Any) -> Any:
    kind = _optional_inner(spec.type) or spec.type

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{kind_name}: '{spec.name}' must be {expected}; got {_describe(value)}")

    if kind is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if kind is int or kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                kind is int and not isinstance(value, int)):
            raise fail("an integer" if kind is int else "a number")
        try:
            number = kind(value)
        except OverflowError:
            raise fail("a finite number") from None
        if kind is float and not math.isfinite(number):
            raise fail("a finite number")
        _check_bounds(spec, number, fail, "an integer" if kind is int else "a number")
        return number
    if kind is str:
        if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
            raise fail(f"a non-empty string of at most {MAX_NAME_CHARS} characters")
        _check_bounds(spec, value, fail, "a string")
        return value
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list | tuple) or not value or not all(
                isinstance(v, str) and 0 < len(v) <= MAX_NAME_CHARS for v in value):
            raise fail(f"a non-empty list of strings of at most {MAX_NAME_CHARS} characters")
        for element in value:
            _check_bounds(spec, element, fail, "a list of strings")
        if len(set(value)) != len(value):
            raise fail("a list without repeats")
        return tuple(value)
    if _holds_columns(kind):
        return _read_column_inputs(kind_name, spec.name, value, fail)
    if kind is Inputs or typing.get_origin(kind) is dict:
        return _read_inputs(kind_name, spec.name, value, fail)
    raise TypeError(f"parameter type {kind!r} is not supported")


def _holds_columns(kind: Any) -> bool:
    return typing.get_origin(kind) is dict and typing.get_args(kind)[1:] == (ColumnsRef,)


def _check_bounds(spec: FieldSpec, value: Any, fail: Callable[[str], ConfigError],
                  noun: str) -> None:
    d = spec.declaration
    if d.choices is not None and value not in d.choices:
        raise fail(f"{noun}, {spec.rule}" if noun.startswith("a list") else spec.rule)
    if isinstance(value, str):
        return
    if ((d.ge is not None and value < d.ge) or (d.gt is not None and value <= d.gt)
            or (d.le is not None and value > d.le) or (d.lt is not None and value >= d.lt)):
        raise fail(f"{noun} {spec.rule}")


def _read_inputs(kind_name: str, key: str, value: Any,
                 fail: Callable[[str], ConfigError]) -> Inputs:
    if not isinstance(value, Mapping) or not value:
        raise fail("a table naming, per party, a dataset and a column")
    inputs = {}
    for party, ref in value.items():
        if not (isinstance(ref, Mapping) and set(ref) == {"dataset", "column"}
                and all(isinstance(ref[k], str) and 0 < len(ref[k]) <= MAX_NAME_CHARS
                        for k in ("dataset", "column"))):
            raise ConfigError(f"{kind_name}: '{key}' of party {_name(party)} must be "
                              "{ dataset = \"...\", column = \"...\" }, each name of at "
                              f"most {MAX_NAME_CHARS} characters")
        inputs[str(party)] = InputRef(ref["dataset"], ref["column"])
    return inputs


def _read_column_inputs(kind_name: str, key: str, value: Any,
                        fail: Callable[[str], ConfigError]) -> ColumnInputs:
    if not isinstance(value, Mapping) or not value:
        raise fail("a table naming, per party, a dataset and its columns")
    inputs = {}
    for party, ref in value.items():
        where = f"{kind_name}: '{key}' of party {_name(party)}"
        if not (isinstance(ref, Mapping) and {"dataset", "columns"} <= set(ref)
                <= {"dataset", "columns", "bounds", "label"}):
            raise ConfigError(f"{where} must be {{ dataset = \"...\", columns = [...] }}, "
                              "with bounds = [...] or label = \"...\" where the kind needs "
                              "them")
        dataset, columns, bounds = ref["dataset"], ref["columns"], ref.get("bounds")
        label = ref.get("label")
        if label is not None and not (isinstance(label, str)
                                      and 0 < len(label) <= MAX_NAME_CHARS):
            raise ConfigError(f"{where}: the label must be a column name of at most "
                              f"{MAX_NAME_CHARS} characters")
        if not (isinstance(dataset, str) and 0 < len(dataset) <= MAX_NAME_CHARS):
            raise ConfigError(f"{where}: the dataset must be a name of at most "
                              f"{MAX_NAME_CHARS} characters")
        if not (isinstance(columns, list | tuple) and 0 < len(columns) <= MAX_COLUMNS and all(
                isinstance(c, str) and 0 < len(c) <= MAX_NAME_CHARS for c in columns)
                and len(set(columns)) == len(columns)):
            raise ConfigError(f"{where}: 'columns' must be a list of 1 to {MAX_COLUMNS} "
                              f"different names of at most {MAX_NAME_CHARS} characters")
        if bounds is not None and not (
                isinstance(bounds, list | tuple) and len(bounds) == len(columns) and all(
                    isinstance(b, int | float) and not isinstance(b, bool)
                    and math.isfinite(b) and b > 0 for b in bounds)):
            raise ConfigError(f"{where}: 'bounds' must list one positive finite number per "
                              "column")
        inputs[str(party)] = ColumnsRef(dataset, tuple(columns),
                                        None if bounds is None else tuple(map(float, bounds)),
                                        label)
    return inputs
