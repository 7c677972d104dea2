"""`data2vec compare --set METHOD.KEY=VALUE`: a tuning run's recipe changes, parsed and checked against the
method's config before any work (images and text alike)."""

from __future__ import annotations

from .errors import CliError


def parse_recipe_sets(items: list[str], methods: tuple[str, ...]) -> dict:
    """--set METHOD.KEY=VALUE items as {method: {key: value}}; the method must be an arm of this comparison and
    the key a field of its config or of the encoder (or lr)."""
    from ..methods import get_method
    from .pretrain import _parse_sets, check_sets

    out: dict = {}
    for item in items:
        target, sep, _ = item.partition("=")
        method, dot, key = target.partition(".")
        if not sep or not dot or not key.strip():
            raise CliError(f"--set {item!r} is not METHOD.KEY=VALUE; fix: e.g. --set data2vec.lr=1e-3")
        method = method.strip()
        if method not in methods:
            raise CliError(f"--set {item!r}: {method} is not among --methods {','.join(methods)}; fix: name one "
                           "of them")
        (value,) = _parse_sets([item.partition(".")[2]]).values()
        if key.strip() != "lr":
            check_sets(get_method(method), {key.strip(): value})
        elif not isinstance(value, (int, float)) or value <= 0:
            raise CliError(f"--set {item!r}: lr must be a number > 0; fix: e.g. --set {method}.lr=1e-3")
        out.setdefault(method, {})[key.strip()] = value
    return out
