"""Sizes and speeds in one convention: binary units labelled as such (KiB, MiB, GiB, TiB), for memory, files and downloads alike.

Why binary everywhere: the app's most important size question is "does the model fit in memory",
and RAM and VRAM come in binary amounts (a "16 GB" card holds 16 GiB; operating systems report RAM
that way). Showing files and downloads in the same unit lets people compare a model's size with
their memory directly, so one unit is used for everything and labelled correctly ("GiB", never
"GB" for 2**30). Hugging Face lists file sizes in decimal GB; where that matters (the size a user
may compare with the Hub's page) the exact byte count goes into a tooltip (`exact_bytes`).
"""

from __future__ import annotations

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

_UNITS = (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB))


def _unit_for(n: float) -> tuple[str, int]:
    for name, size in _UNITS:
        if abs(n) >= size:
            return name, size
    return "B", 1


def format_bytes(n: float, *, decimals: int = 1, like: float | None = None, keep_zero: bool = False) -> str:
    """12_109_566_560 → '11.3 GiB'; 16 * 2**30 → '16 GiB'; 500 → '500 B'.

    `like` picks the unit from another figure (the total of a progress line), and `keep_zero`
    keeps a trailing '.0', so '5.0 GiB of 11.3 GiB' never jumps in width as the numbers change.
    """
    unit, size = _unit_for(like if like else n)
    if size == 1:
        return f"{n:.0f} B"
    text = f"{n / size:.{decimals}f}"
    if not keep_zero and decimals > 0:
        text = text.rstrip("0").rstrip(".")
    return f"{text} {unit}"


def format_gib(n: float, decimals: int = 1) -> str:
    """Always in GiB, with a fixed number of decimals: '0.19 GiB', '11.3 GiB' (the planner's reasons)."""
    return f"{n / GiB:.{decimals}f} GiB"


def format_rate(bytes_per_s: float, *, like: float | None = None) -> str:
    """38_500_000 → '36.7 MiB/s' (one decimal always, so the figure does not jump)."""
    return format_bytes(bytes_per_s, like=like, keep_zero=True) + "/s"


def exact_bytes(n: int) -> str:
    """'12,109,566,560 bytes (12.1 GB as Hugging Face lists it)': the figure to compare with the Hub."""
    return f"{n:,} bytes ({n / 1e9:.1f} GB as Hugging Face lists it)"
