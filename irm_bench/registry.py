"""Name-to-object lookup shared by every registry (methods, environments, presets,
penalty estimators): an unknown name raises ``KeyError`` naming the closest match and
listing the known names."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """Return ``registry[name]``.

    Raises
    ------
    KeyError
        ``unknown <kind> 'name' (did you mean '...'?); known: a, b, c``.
    """
    try:
        return registry[name]
    except KeyError:
        hint = difflib.get_close_matches(str(name), list(registry), n=1)
        did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise KeyError(
            f"unknown {kind} {name!r}{did_you_mean}; known: {', '.join(registry)}"
        ) from None
