"""One declaration of each experiment's parameters: name, kind, default, one-line meaning, and the check.

An experiment module declares ``PARAMS = declare(Int("n_contexts", 100, "contexts: ..."), ...)``. From that single
declaration:

* the notebook's ``parameters`` cell holds exactly these names with these defaults (a test compares them);
* ``iclnb list`` prints it, the accepted values in words made from the same bounds and choices the check uses;
  ``iclnb run -p NAME VALUE`` converts and checks each value against it before anything starts;
* :meth:`Declaration.validate` turns the notebook's values into :class:`Values` (checked, normalised: lists parsed,
  strings stripped) before any model is loaded, and ``config.json`` records every declared parameter.

A default is written once, in the declaration. The parameters every experiment shares (``model``, ``dtype``,
``output_dir``, ``seed``, ``n_boot``, ``n_perm``) are declared once below and reused; ``Layers(default)`` gives the
``layers`` parameter with an experiment's own default.

A bound may be another parameter, with an offset: ``Int("n_clusters", 3, "...", min=2, max="n_words - 1")`` is
checked against the run's ``n_words`` once every parameter has its value, and listed as "integer in [2, n_words - 1]".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from iclnb.core.errors import IclnbError
from iclnb.core.layers import check_layers_spec

__all__ = ["Param", "Limit", "Int", "Float", "Bool", "Str", "Choice", "IntList", "StrList", "Layers", "declare",
           "Declaration", "Values", "distinct", "MODEL", "DTYPE", "OUTPUT_DIR", "SEED", "N_BOOT", "N_PERM",
           "MAX_CONTEXTS", "LOG"]


@dataclass(frozen=True)
class Limit:
    """A bound that another parameter sets: ``Limit.parse("n_words - 1")`` is the run's ``n_words`` minus 1."""

    name: str
    offset: float = 0

    _SPELLING = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:([+-])\s*(\d+(?:\.\d*)?))?\s*$")

    @classmethod
    def parse(cls, text: str) -> "Limit":
        match = cls._SPELLING.match(text)
        if not match:
            raise ValueError(f"a bound names a parameter, optionally with an offset (\"n_words - 1\"); got {text!r}")
        name, sign, number = match.groups()
        offset = 0 if number is None else (float(number) if "." in number else int(number))
        return cls(name, -offset if sign == "-" else offset)

    def of(self, values):
        """The bound's value among the run's checked ``values``."""
        return values[self.name] + self.offset

    def __str__(self) -> str:
        if not self.offset:
            return self.name
        return f"{self.name} {'-' if self.offset < 0 else '+'} {abs(self.offset)}"


@dataclass(frozen=True)
class Param:
    """One parameter. ``kind`` is the Python type of its notebook value (int, float, bool, str); ``check`` turns a
    value of that kind into the normalised value the experiment uses, or raises IclnbError."""

    name: str
    default: Any
    help: str
    kind: type = str
    check: Callable[[str, Any], Any] | None = field(default=None, compare=False, repr=False)
    describe: str = ""  # the accepted values in words, for `iclnb list` (e.g. "integer >= 1")
    #: bounds that other parameters set, as ("min" | "max", Limit); checked by Declaration.validate
    limits: tuple = field(default=(), compare=False)

    def normalise(self, value):
        value = self.coerce(value)
        return self.check(self.name, value) if self.check else value

    def coerce(self, value):
        """``value`` as this parameter's kind (a command-line string or a notebook value)."""
        kind, name = self.kind, self.name
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise IclnbError(f"parameter {name} expects true or false, got {value!r}")
        if kind is int:
            if isinstance(value, bool):
                raise IclnbError(f"parameter {name} expects an integer, got {value!r}")
            if isinstance(value, float) and value.is_integer():
                return int(value)
            try:
                return int(str(value).strip())
            except (TypeError, ValueError):
                raise IclnbError(f"parameter {name} expects an integer, got {value!r}") from None
        if kind is float:
            if isinstance(value, bool):
                raise IclnbError(f"parameter {name} expects a number, got {value!r}")
            try:
                return float(str(value).strip()) if isinstance(value, str) else float(value)
            except (TypeError, ValueError):
                raise IclnbError(f"parameter {name} expects a number, got {value!r}") from None
        if isinstance(value, (list, tuple)):  # a list given for a comma-separated string parameter
            return ",".join(str(v).strip() for v in value)
        if value is None:
            return ""
        return str(value).strip()

    def check_limits(self, value, values) -> None:
        """Refuse ``value`` (one number, or each number of a list) outside the bounds other parameters set."""
        for side, limit in self.limits:
            bound = limit.of(values)
            for number in value if isinstance(value, list) else [value]:
                if (number < bound) if side == "min" else (number > bound):
                    word = "at least" if side == "min" else "at most"
                    raise IclnbError(f"parameter {self.name} must be {word} {limit} ({bound}), got {number}")

    @property
    def kind_name(self) -> str:
        return self.kind.__name__


def _range_check(kind, minimum=None, maximum=None):
    def check(name, value):
        if kind is float and not math.isfinite(value):
            raise IclnbError(f"parameter {name} must be a finite number, got {value}")
        if minimum is not None and value < minimum:
            raise IclnbError(f"parameter {name} must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise IclnbError(f"parameter {name} must be at most {maximum}, got {value}")
        return value
    return check


def _split_bounds(minimum, maximum):
    """(numeric minimum, numeric maximum, limits): a bound given as a parameter's name becomes a :class:`Limit`."""
    limits = tuple((side, Limit.parse(bound)) for side, bound in (("min", minimum), ("max", maximum))
                   if isinstance(bound, str))
    return (None if isinstance(minimum, str) else minimum, None if isinstance(maximum, str) else maximum, limits)


def _bounds(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    return f" <= {maximum}" if maximum is not None else ""


def Int(name, default, help, min=1, max=None) -> Param:  # noqa: A002
    """An integer; ``min`` and ``max`` are numbers or another parameter's name with an offset ("n_words - 1")."""
    low, high, limits = _split_bounds(min, max)
    return Param(name, default, help, int, _range_check(int, low, high), f"integer{_bounds(min, max)}", limits)


def Float(name, default, help, min=None, max=None) -> Param:  # noqa: A002
    """A finite number; bounds as for :func:`Int`."""
    low, high, limits = _split_bounds(min, max)
    return Param(name, default, help, float, _range_check(float, low, high), f"number{_bounds(min, max)}", limits)


def Bool(name, default, help) -> Param:
    return Param(name, default, help, bool, None, "true or false")


def Str(name, default, help, check=None, describe="text") -> Param:
    return Param(name, default, help, str, check, describe)


def Choice(name, default, help, options) -> Param:
    options = tuple(options)

    def check(n, value):
        if value not in options:
            raise IclnbError(f"parameter {n} must be one of {', '.join(map(str, options))}; got {value!r}")
        return value
    return Param(name, default, help, str, check, "one of " + ", ".join(map(str, options)))


def split_items(name: str, value) -> list[str]:
    """The items of a comma-separated list parameter (spaces separate too: "10 20"); an empty item ("1,,2", "1,2,")
    is refused with one line, so a typo is never silently dropped."""
    text = str(value).strip()
    if not text:
        return []
    items = [part.strip() for part in text.split(",")]
    if any(not item for item in items):
        raise IclnbError(f"parameter {name} has an empty item in {str(value)!r}; separate the values by single "
                         f"commas, with no comma at either end")
    return [word for item in items for word in item.split()]


def list_note(name: str, value, normalised) -> str | None:
    """The one-line note for a list parameter that is read otherwise than it was written (repeats merged, numbers
    sorted: the same rule in every notebook); None when it is read as written."""
    if not isinstance(normalised, list) or isinstance(value, (list, tuple)):
        return None
    items = split_items(name, value)  # it parsed: the value was normalised from these items
    read = [str(v) for v in normalised]
    if items == read:
        return None
    return (f"note: parameter {name} {str(value)!r} is read as {','.join(read)} (a list of values is a set: repeats "
            f"are merged and numbers sorted, in every notebook)")


def distinct(values, key=None) -> list:
    """``values`` without repeats, the first of each kept, in order: the rule for every list of values that stands
    for a set (a list parameter's numbers or names, the values a sweep gives one parameter). ``key(value)`` says
    which values are the same (default: equal values)."""
    seen, out = set(), []
    for value in values:
        k = value if key is None else key(value)
        if k not in seen:
            seen.add(k)
            out.append(value)
    return out


def IntList(name, default, help, min=1, max=None, unique_sorted=True) -> Param:  # noqa: A002
    """A comma-separated list of integers ("10,20,50"); normalised to a sorted list without repeats (with
    ``unique_sorted=False``, as given). Bounds apply to every number, as for :func:`Int`."""
    low, high, limits = _split_bounds(min, max)
    bound = _range_check(int, low, high)

    def check(n, value):
        parts = split_items(n, value)
        if not parts:
            raise IclnbError(f"parameter {n} is empty; give comma-separated integers such as 10,20,50")
        out = []
        for part in parts:
            try:
                number = int(part)
            except ValueError:
                raise IclnbError(f"parameter {n} expects comma-separated integers, got {part!r} in {value!r}") from None
            out.append(bound(n, number))
        return sorted(distinct(out)) if unique_sorted else out
    return Param(name, default, help, str, check, f"comma-separated integers{_bounds(min, max)}", limits)


def StrList(name, default, help, options=None, allow_empty=False) -> Param:
    """A comma-separated list of names; with ``options``, a subset of them (order kept, repeats dropped)."""
    def check(n, value):
        parts = distinct(split_items(n, value))
        if not parts and allow_empty and str(value).strip():
            raise IclnbError(f"parameter {n} holds no names (got {value!r}); leave it empty for the default or give "
                             f"comma-separated names")
        if not parts and not allow_empty:
            raise IclnbError(f"parameter {n} is empty; give comma-separated names"
                             + (f" from {', '.join(options)}" if options else ""))
        if options is not None:
            bad = [p for p in parts if p not in options]
            if bad:
                raise IclnbError(f"parameter {n} must be a comma-separated subset of {', '.join(options)}; "
                                 f"got {', '.join(bad)}")
        return parts
    describe = "comma-separated subset of " + ", ".join(options) if options else "comma-separated names"
    return Param(name, default, help, str, check, describe)


def Layers(default="default", help="blocks to measure: \"default\" (0, L/4, L/2, 3L/4, L-1), \"all\", or e.g. "
           "\"0,5,-1\"; negatives count from the end, \"embed\" is the embeddings") -> Param:
    return Param("layers", default, help, str, lambda n, v: check_layers_spec(v),
                 "all, default, or comma-separated block indices and embed (negatives count from the end)")


# ------------------------------------------------------------------------------------------ the common parameters


def _dtype_check(name, value):
    if value not in ("", "float32", "bfloat16", "float16", "float64"):
        raise IclnbError(f"parameter {name} must be empty (float32 on CPU, bfloat16 on GPU) or one of float32, "
                         f"bfloat16, float16, float64; got {value!r}")
    return value


def _model_check(name, value):
    if not value:
        raise IclnbError(f"parameter {name} is empty; give an embedded model name (gemma-3-270m, smollm2-135m), a "
                         f"Hugging Face id or a local directory")
    return value


MODEL = Str("model", "gemma-3-270m", "embedded model name, Hugging Face id, or local directory", _model_check,
            "model name or directory")
DTYPE = Str("dtype", "", "empty: float32 on CPU, bfloat16 on GPU; or float32, bfloat16, float16", _dtype_check,
            "empty, float32, bfloat16, float16 or float64")
OUTPUT_DIR = Str("output_dir", "", "empty: results/<notebook>", None, "directory")
#: The largest number of contexts any experiment accepts: beyond it a run would not finish on any machine (and a
#: typo such as an extra zero should be caught before hours of work, not after).
MAX_CONTEXTS = 1_000_000
SEED = Int("seed", 42, "run seed; every random draw comes from a stream derived from it", min=0)
LOG = Str("log", "", "W&B project to log the finished run to (empty: no logging; offline without an account)",
          None, "project name or empty")
N_BOOT = Int("n_boot", 1000, "bootstrap resamples for confidence intervals", min=10)
N_PERM = Int("n_perm", 1000, "permutations for p-values", min=10)


# ------------------------------------------------------------------------------------------ declaration and values


class Values:
    """Checked, normalised parameter values with attribute access (``p.n_contexts``); ``dict(p)`` gives them all."""

    def __init__(self, values: dict):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}; parameters: {', '.join(self._values)}") from None

    def __setattr__(self, name, value):
        raise AttributeError("parameter values are read-only; change them in the parameters cell")

    def __iter__(self):
        return iter(self._values.items())

    def __getitem__(self, name):
        return self._values[name]

    def __contains__(self, name):
        return name in self._values

    def __repr__(self):
        return "Values(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"


@dataclass(frozen=True)
class Declaration:
    """The ordered parameters of one experiment."""

    params: tuple[Param, ...]

    def __post_init__(self):
        names = [p.name for p in self.params]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"parameters declared twice: {repeated}")
        for p in self.params:
            for _, limit in p.limits:
                if limit.name not in names:
                    raise ValueError(f"parameter {p.name} is bounded by {limit.name}, which is not declared")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def __getitem__(self, name) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def __contains__(self, name) -> bool:
        return name in self.names

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def raw(self, namespace: dict) -> dict:
        """The declared parameters' values as the notebook holds them (``globals()``), defaults where absent."""
        return {p.name: namespace.get(p.name, p.default) for p in self.params}

    def notes(self, values: dict) -> list[str]:
        """One line for each list value in ``values`` that is read otherwise than written (:func:`list_note`)."""
        notes = []
        for p in self.params:
            if p.name in values:
                try:
                    note = list_note(p.name, values[p.name], p.normalise(values[p.name]))
                except IclnbError:
                    continue
                if note:
                    notes.append(note)
        return notes

    def validate(self, values: dict) -> Values:
        """Check every value (unknown names are refused), then the bounds that parameters set for each other, and
        return the normalised :class:`Values`."""
        unknown = sorted(set(values) - set(self.names))
        if unknown:
            raise IclnbError(f"unknown parameter(s) {', '.join(unknown)}; valid parameters: {', '.join(self.names)}")
        checked = {p.name: p.normalise(values.get(p.name, p.default)) for p in self.params}
        for p in self.params:
            p.check_limits(checked[p.name], checked)
        return Values(checked)

    def parameters_cell(self) -> str:
        """The source of the notebook's ``parameters`` cell: one line per parameter with its meaning."""
        width = max(len(f"{p.name} = {p.default!r}") for p in self.params)
        lines = []
        for p in self.params:
            default = f'"{p.default}"' if isinstance(p.default, str) else repr(p.default)
            assignment = f"{p.name} = {default}"
            lines.append(f"{assignment.ljust(width)}  # {p.help}")
        return "\n".join(lines)


def declare(*params: Param) -> Declaration:
    """An experiment's parameters in the order of its parameters cell (the common ones first, the run ones last)."""
    return Declaration(tuple(params))
