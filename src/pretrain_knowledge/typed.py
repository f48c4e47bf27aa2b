"""Strict conversion of plain config mappings into frozen dataclasses, and their JSON schema.

Why not jsonschema alone: a schema error from it names the offending value but not where the user
wrote it, prints the whole sub-schema, and cannot suggest the key that was meant. Here every
dataclass field is the single definition of a setting (type, default, bounds, description); a
mapping is converted field by field, so an error names its dotted path as written (``datasets.
fmnist.overrides.extraction.sparsify.qthres``), states the rule it breaks and, for an unknown key,
the nearest valid one. The JSON schema in ``workflow/schemas`` is generated from the same fields
(:func:`json_schema`), so the two cannot disagree.

Supported annotations: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``, ``X | None``,
``tuple[X, ...]``, ``dict[str, Any]`` (a free mapping, checked by its owner), ``dict[str, D]`` and
nested dataclasses ``D``, and unions of those (tried in order).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, unknown, mistyped or out of range; the message says where and how to fix it."""


def setting(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    exclusive_maximum: float | None = None,
    factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field that carries its description and numeric bounds for checks and the schema."""
    bounds = {
        "minimum": minimum,
        "maximum": maximum,
        "exclusiveMinimum": exclusive_minimum,
        "exclusiveMaximum": exclusive_maximum,
    }
    metadata = {"doc": doc, "bounds": {k: v for k, v in bounds.items() if v is not None}}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def fields_of(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """Field → (field, resolved annotation) of a dataclass, in declaration order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _fail(path: str, message: str) -> ConfigError:
    return ConfigError(f"config: {path or '(top level)'}: {message}")


def suggest(key: str, valid: list[str]) -> str:
    """' did you mean 'x'?' for the closest valid key, or an empty string."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _is_none_allowed(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation) if _is_union(annotation) else annotation is type(None)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _describe(annotation: Any) -> str:
    """A short human name of a type, for error messages."""
    if _is_union(annotation):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(annotation)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(annotation):
        return "a mapping"
    if annotation is type(None):
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(annotation, str(annotation))


def _scalar(value: Any, annotation: Any, path: str) -> Any:
    if isinstance(value, str) and annotation in (bool, int, float):
        # Snakemake's --config hands nested values over as strings (extraction='{shards: 2}').
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if not isinstance(parsed, str):
            value = parsed
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is Any:
        return value
    raise _fail(path, f"expected {_describe(annotation)}, got {value!r}")


def _maybe_parsed(value: Any, annotation: Any) -> Any:
    """A string where a mapping or list is expected: parse it as YAML (``--config key='{a: 1}'``)."""
    wants_container = dataclasses.is_dataclass(annotation) or typing.get_origin(annotation) in (tuple, dict)
    if isinstance(value, str) and wants_container:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(parsed, (dict, list)):
            return parsed
    return value


def convert(value: Any, annotation: Any, path: str) -> Any:
    """``value`` as an instance of ``annotation``, or a :class:`ConfigError` naming ``path``."""
    value = _maybe_parsed(value, annotation)
    if _is_union(annotation):
        options = typing.get_args(annotation)
        if value is None:
            if type(None) in options:
                return None
            raise _fail(path, f"expected {_describe(annotation)}, got null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(value, option, path)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise _fail(path, f"expected {_describe(annotation)}, got {value!r}")
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value in choices and not isinstance(value, bool) or (isinstance(value, bool) and value in choices):
            return value
        hint = suggest(str(value), [str(c) for c in choices]) if isinstance(value, str) else ""
        raise _fail(path, f"{value!r} is not one of {list(choices)}.{hint}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _fail(path, f"expected a list, got {value!r}")
        item = typing.get_args(annotation)[0]
        return tuple(convert(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _fail(path, f"expected a mapping, got {value!r}")
        key_type, item = typing.get_args(annotation)
        return {str(k): convert(v, item, _join(path, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, path)
    return _scalar(value, annotation, path)


def check_bounds(value: Any, bounds: Mapping[str, float], path: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    rules = {
        "minimum": (lambda v, b: v >= b, "≥"),
        "maximum": (lambda v, b: v <= b, "≤"),
        "exclusiveMinimum": (lambda v, b: v > b, ">"),
        "exclusiveMaximum": (lambda v, b: v < b, "<"),
    }
    for name, bound in bounds.items():
        ok, symbol = rules[name]
        if not ok(value, bound):
            raise _fail(path, f"must be {symbol} {bound}, got {value!r}")


def build(cls: type[T], raw: Any, path: str = "") -> T:
    """Instantiate dataclass ``cls`` from a mapping: unknown keys, missing keys and bad values fail."""
    if isinstance(raw, cls):
        return raw
    raw = _maybe_parsed(raw, cls)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise _fail(path, f"expected a mapping, got {raw!r}")
    fields = fields_of(cls)
    unknown = [k for k in raw if k not in fields]
    if unknown:
        key = str(unknown[0])
        raise _fail(
            _join(path, key),
            f"unknown key.{suggest(key, list(fields))} Valid keys here: {', '.join(fields)}.",
        )
    values = {}
    for name, (field, annotation) in fields.items():
        here = _join(path, name)
        if name not in raw:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise _fail(here, f"missing; expected {_describe(annotation)}. {field.metadata.get('doc', '')}".strip())
            continue
        value = convert(raw[name], annotation, here)
        check_bounds(value, field.metadata.get("bounds", {}), here)
        values[name] = value
    return cls(**values)


def to_plain(obj: Any) -> Any:
    """A dataclass tree as plain dicts, lists and scalars (JSON- and YAML-safe), keys in field order."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged over ``base`` key by key; mappings merge recursively, lists are replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------------------------
# JSON schema, generated from the same fields
# ----------------------------------------------------------------------------------------------


def _schema_of(annotation: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if _is_union(annotation):
        return {"anyOf": [_schema_of(a, defs) for a in typing.get_args(annotation)]}
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return {"enum": list(typing.get_args(annotation))}
    if origin is tuple:
        return {"type": "array", "items": _schema_of(typing.get_args(annotation)[0], defs)}
    if origin is dict:
        item = typing.get_args(annotation)[1]
        return {"type": "object"} if item is Any else {"type": "object", "additionalProperties": _schema_of(item, defs)}
    if dataclasses.is_dataclass(annotation):
        name = annotation.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            defs[name] = _object_schema(annotation, defs)
        return {"$ref": f"#/$defs/{name}"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    return {"type": simple[annotation]} if annotation in simple else {}


def _object_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    properties, required = {}, []
    for name, (field, annotation) in fields_of(cls).items():
        prop = dict(_schema_of(annotation, defs))
        prop.update(field.metadata.get("bounds", {}))
        if field.metadata.get("doc"):
            prop["description"] = field.metadata["doc"]
        if field.default is not dataclasses.MISSING:
            prop["default"] = to_plain(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            prop["default"] = to_plain(field.default_factory())
        else:
            required.append(name)
        properties[name] = prop
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    if doc:
        schema["description"] = " ".join(doc.split())
    if required:
        schema["required"] = required
    return schema


def json_schema(cls: type, title: str) -> dict[str, Any]:
    """A JSON schema (draft 2020-12) of dataclass ``cls``: unknown keys rejected at every level."""
    defs: dict[str, Any] = {}
    top = _object_schema(cls, defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, **top, "$defs": defs}
