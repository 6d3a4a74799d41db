"""Generated blocks inside hand-written files (a README's ports table, its import picture): the text
between two marker comments, replaced whole by `mnist-mlops specs` and drift-checked with `--check`."""

from __future__ import annotations


def replace_block(text: str, start: str, end: str, block: str, source: str) -> str:
    """`text` with what stands between the markers `start` and `end` replaced by `block`."""
    if start not in text or end not in text:
        raise ValueError(f"{source}: missing the generated block's markers {start} ... {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block}\n{end}{tail}"
