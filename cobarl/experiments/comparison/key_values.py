"""``key=value`` lists, as a strategy spec (``coba:kappa=7,tau=8``) and a tuning sweep
(``kappa=7,11;max_budget=32``) write them: one reader, so both refuse the same mistakes alike."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from cobarl.strategies import canonical_option


def key_values(items: Iterable[str], names: Sequence[str], *, what: str = "option", form: str = "key=value",
               where: str = "") -> Iterator[tuple[str, str, str]]:
    """``(item, key, value)`` of each ``key=value`` item, in the order given, the value's text stripped
    (the caller reads it and names ``item`` when it cannot). A key may be written with ``-`` for ``_``, or by
    an old name (``greso_p_easy``);
    it must be one of ``names`` and given once. ``what``, ``form`` and ``where`` say in an error what was
    wrong, how to write it and where it stood, e.g. ``"grid option"``, ``"option=v1,v2,..."``,
    ``" in 'coba:kappa=7'"``.

    >>> list(key_values(["max-budget= 32"], ["kappa", "max_budget"]))
    [('max-budget= 32', 'max_budget', '32')]
    """
    given: set[str] = set()
    for item in items:
        key, eq, value = item.partition("=")
        key = canonical_option(key.strip())  # - for _, and an option's old name
        if not eq or key not in names:
            raise ValueError(f"bad {what} {item!r}{where}; write {form} with {form.partition('=')[0]} in: "
                             f"{', '.join(names)}")
        if key in given:
            raise ValueError(f"option {key} is given twice{where}; give each option once")
        given.add(key)
        yield item, key, value.strip()
