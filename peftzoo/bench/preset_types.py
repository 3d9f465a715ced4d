"""A preset's JSON values checked against ``Preset``'s type hints (lists become tuples), and the error every
preset check raises (``PresetError``: it names the file and the key)."""
from __future__ import annotations

import json
import types
import typing


class PresetError(ValueError):
    pass


def type_name(t) -> str:
    return {int: "an integer", tuple: "a list", float: "a number", str: "a string", bool: "true/false", dict: "an object",
            type(None): "null"}.get(t, getattr(t, "__name__", str(t)))


def check_value(v, t, src: str, key: str, minimum=None):
    """``v`` checked against the type hint ``t`` (lists become tuples); a PresetError otherwise."""
    where = f"{src}: {key!r}"
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        alts = [a for a in args if a is not type(None)]
        if len(alts) == 1:
            return check_value(v, alts[0], src, key, minimum)
        for a in alts:
            try:
                return check_value(v, a, src, key, minimum)
            except PresetError:
                pass
        raise PresetError(f"{where} must be {' or '.join(type_name(typing.get_origin(a) or a) for a in alts)}, "
                          f"got {json.dumps(v)}")
    if origin is tuple:
        if not isinstance(v, list):
            raise PresetError(f"{where} must be a list, got {json.dumps(v)}")
        return tuple(check_value(x, args[0], src, f"{key}[{i}]") for i, x in enumerate(v))
    if origin is dict:
        if not isinstance(v, dict):
            raise PresetError(f"{where} must be an object, got {json.dumps(v)}")
        return {k: check_value(x, args[1], src, f"{key}.{k}") for k, x in v.items()}
    if t is type(None):
        if v is not None:
            raise PresetError(f"{where} must be null, got {json.dumps(v)}")
        return v
    ok = isinstance(v, t) and not (isinstance(v, bool) and t is not bool)
    if t is float and isinstance(v, int) and not isinstance(v, bool):
        v, ok = float(v), True
    if not ok:
        raise PresetError(f"{where} must be {type_name(t)}, got {json.dumps(v)}")
    if minimum is not None and v < minimum:
        raise PresetError(f"{where} is {v}: it must be >= {minimum}")
    return v
