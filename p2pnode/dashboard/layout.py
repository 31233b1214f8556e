"""Blocks of pre-cut text lines: tables and side-by-side blocks that rich only has to print."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from rich.text import Text

# rich's Table measures every cell again for each level of nesting, which cost 20-50 ms a frame
# here; lines cut to their final width once cost a millisecond or two, and their height is
# simply how many there are.

Block = list[Text]
Cell = Text | str
GAP = 2


def clip(line: Text, width: int) -> Text:
    """`line` itself, cut with an ellipsis to `width` cells and marked never to wrap."""
    line.no_wrap, line.overflow, line.end = True, "ellipsis", "\n"
    if line.cell_len > width:
        line.truncate(max(width, 0), overflow="ellipsis")
    return line


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(cell)


def _widths(columns: Sequence[Sequence[Text]], width: int, limits: Mapping[int, int]) -> list[int]:
    widths = [max((c.cell_len for c in column), default=0) for column in columns]
    for index, limit in limits.items():
        if index < len(widths):
            widths[index] = min(widths[index], limit)
    # Too wide for the terminal: take from the widest columns first, as they lose the least.
    excess = sum(widths) + GAP * (len(widths) - 1) - width
    while excess > 0 and max(widths, default=0) > 1:
        widest = widths.index(max(widths))
        widths[widest] -= 1
        excess -= 1
    return widths


def table(
    headers: Sequence[Cell],
    rows: Sequence[Sequence[Cell]],
    width: int,
    *,
    right: Collection[str] = (),
    limits: Mapping[int, int] | None = None,
    fixed: Mapping[int, int] | None = None,
) -> Block:
    """A header line and one line per row, columns two spaces apart, cut to `width`.

    `limits` caps a column's width; `fixed` sets it whatever its cells hold. The cells' Text
    objects are cut and padded in place: they are made for this one table.
    """
    titles = [Text(h, style="bold dim") if isinstance(h, str) else h for h in headers]
    grid = [titles, *([_text(c) for c in r] for r in rows)]
    justify_right = [t.plain in right for t in titles]
    columns = list(zip(*grid, strict=True))
    widths = _widths(columns, width, limits or {})
    for index, size in (fixed or {}).items():
        widths[index] = size
    last, gap = len(headers) - 1, Text(" " * GAP)
    lines = []
    for row in grid:
        for index, (cell, size) in enumerate(zip(row, widths, strict=True)):
            room = size - clip(cell, size).cell_len
            if justify_right[index]:
                cell.pad_left(room)
            elif index < last:
                cell.pad_right(room)
        lines.append(clip(gap.join(row), width))
    return lines


def beside(left: Block, right: Block, width: int, *, gap: int = GAP) -> Block:
    """Two blocks next to each other, top aligned; the right one gets what the left leaves.

    The lines of both are changed in place and make up the result.
    """
    left_width = min(max((line.cell_len for line in left), default=0), width)
    room = width - left_width - gap
    if room < 8:
        return [clip(line, width) for line in left]
    lines = []
    for index in range(max(len(left), len(right))):
        line = left[index] if index < len(left) else Text()
        if index < len(right):
            line.pad_right(left_width - line.cell_len + gap)
            line.append(clip(right[index], room))
        lines.append(clip(line, width))
    return lines
