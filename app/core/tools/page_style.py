"""Text a web page hides from people, found before the page reaches the model (prompt-injection defence).

A page can carry instructions for the model that no reader sees: `display:none`, `visibility:hidden`,
`font-size:0`, `opacity:0`, text pushed off-screen, clipped to nothing, or written in the colour of
its background. The browser tool drops such text (and says how many passages it dropped), so the
model reads what a person reading the page would read.

The styles come from `style` attributes and the page's own `<style>` sheets (parsed by tinycss2,
matched by lxml's cssselect). It is not a browser engine: no external stylesheets, no scripts, no
specificity (a later rule wins, `!important` wins over both), and layout-dependent tricks (text
under an image, text in a zero-sized iframe) are out of reach. Where it is unsure, it keeps text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import tinycss2  # type: ignore[import-untyped]
import tinycss2.color3  # type: ignore[import-untyped]

# Declarations that can hide text; rules with none of them are never matched (cost).
_RELEVANT = frozenset(
    {
        "display",
        "visibility",
        "opacity",
        "font-size",
        "font",
        "color",
        "background",
        "background-color",
        "background-image",
        "position",
        "left",
        "top",
        "right",
        "bottom",
        "text-indent",
        "clip",
        "clip-path",
        "transform",
        "width",
        "height",
        "max-width",
        "max-height",
        "overflow",
        "content-visibility",
    }
)
_MAX_RULES = 400  # hiding-relevant style rules matched per page (a page with more is built to stall us)
_MAX_SELECTOR = 300
_FAR_PX = 1000.0  # beyond this offset a positioned element is off any screen
_TINY_PX = 2.0  # text smaller than this is not readable
_KEYWORD_PX = {"xx-small": 9.0, "x-small": 10.0, "small": 13.0, "medium": 16.0, "large": 18.0}
_LENGTH_RE = re.compile(r"^(-?\d*\.?\d+)(px|pt|em|rem|%|vw|vh|cm|mm|in|ex|ch)?$")


@dataclass
class _Inherited:
    color: Any  # tinycss2 RGBA, or None when unknown
    background: Any  # the nearest opaque background colour, or None when an image may be behind
    font_px: float
    visible: bool


def _declarations(text: str) -> dict[str, tuple[str, bool]]:
    """`prop: value` pairs of a style attribute or rule body: {prop: (value, important)}."""
    out: dict[str, tuple[str, bool]] = {}
    for decl in tinycss2.parse_blocks_contents(text, skip_comments=True, skip_whitespace=True):
        if decl.type != "declaration":
            continue
        name = decl.lower_name
        if name not in _RELEVANT:
            continue
        value = tinycss2.serialize(decl.value).strip().lower()
        if name in out and out[name][1] and not decl.important:
            continue
        out[name] = (value, bool(decl.important))
    return out


def _sheet_rules(root: Any) -> list[tuple[Any, dict[str, tuple[str, bool]]]]:
    """(matcher, declarations) of the page's `<style>` rules that could hide text, in order."""
    from lxml.cssselect import CSSSelector, SelectorError

    rules: list[tuple[Any, dict[str, tuple[str, bool]]]] = []
    for style in root.iter("style"):
        media = (style.get("media") or "").lower()
        if media and "screen" not in media and "all" not in media:
            continue
        text = style.text or ""
        for rule in _flatten(tinycss2.parse_stylesheet(text, skip_comments=True, skip_whitespace=True)):
            if len(rules) >= _MAX_RULES:
                return rules
            decls = _declarations(tinycss2.serialize(rule.content))
            if not decls:
                continue
            selector = tinycss2.serialize(rule.prelude).strip()
            if not selector or len(selector) > _MAX_SELECTOR:
                continue
            if re.search(r":(?:hover|focus|active|target|checked)", selector):
                continue  # applies only while a person interacts, not to what the page shows
            try:
                rules.append((CSSSelector(selector), decls))
            except (SelectorError, ValueError, TypeError, SyntaxError):
                continue  # selectors cssselect cannot express (::before, :has) are skipped
    return rules


def _flatten(nodes: list[Any]) -> list[Any]:
    """Qualified rules, including those inside @media screen/all and @supports blocks."""
    out: list[Any] = []
    for node in nodes:
        if node.type == "qualified-rule":
            out.append(node)
        elif node.type == "at-rule" and node.content is not None:
            keyword = node.lower_at_keyword
            prelude = tinycss2.serialize(node.prelude).lower()
            if keyword == "supports" or (keyword == "media" and ("print" not in prelude or "screen" in prelude)):
                out.extend(_flatten(tinycss2.parse_rule_list(node.content, skip_comments=True, skip_whitespace=True)))
    return out


def _px(value: str, base: float) -> float | None:
    value = value.strip()
    if value in _KEYWORD_PX:
        return _KEYWORD_PX[value]
    if value == "0":
        return 0.0
    m = _LENGTH_RE.match(value)
    if not m:
        return None
    number, unit = float(m.group(1)), m.group(2) or "px"
    if unit == "px":
        return number
    if unit == "pt":
        return number * 4 / 3
    if unit in ("em", "ch", "ex"):
        return number * base * (0.5 if unit == "ex" else 1.0)
    if unit == "rem":
        return number * 16.0
    if unit == "%":
        return number * base / 100
    if unit in ("vw", "vh"):
        return number * 10.0  # a 1000 px viewport is close enough to tell "tiny" and "far"
    return {"cm": 37.8, "mm": 3.78, "in": 96.0}[unit] * number


def _color(value: str) -> Any:
    try:
        parsed = tinycss2.color3.parse_color(value.split("!")[0].strip())
    except Exception:  # noqa: BLE001 - tinycss2 raises on odd tokens; unknown colour = keep the text
        return None
    return parsed if parsed is not None and parsed != "currentColor" else None


def _luminance(c: Any) -> float:
    def channel(v: float) -> float:
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(c.red) + 0.7152 * channel(c.green) + 0.0722 * channel(c.blue)


def _invisible_on(color: Any, background: Any) -> bool:
    """Text in `color` over `background` that no one can read (same colour, or nearly)."""
    if color is None:
        return False
    if color.alpha < 0.1:
        return True
    if background is None:
        return False
    a, b = _luminance(color), _luminance(background)
    ratio = (max(a, b) + 0.05) / (min(a, b) + 0.05)
    return ratio < 1.2


def _offscreen(style: dict[str, str], font_px: float) -> bool:
    if style.get("position", "") in ("absolute", "fixed"):
        for side in ("left", "top", "right", "bottom"):
            px = _px(style.get(side, ""), font_px)
            if px is not None and abs(px) >= _FAR_PX:
                return True
    indent = _px(style.get("text-indent", ""), font_px)
    if indent is not None and indent <= -_FAR_PX / 2:
        return True
    transform = style.get("transform", "")
    if transform:
        if re.search(r"scale[xy]?\(\s*0(?:\.0*)?\s*[,)]", transform):
            return True
        for number in re.findall(r"translate[xy3d]*\(\s*(-?\d+\.?\d*)px", transform):
            if abs(float(number)) >= _FAR_PX:
                return True
    return False


def _clipped(style: dict[str, str], font_px: float) -> bool:
    clip = style.get("clip", "").replace(" ", "")
    if clip.startswith("rect("):
        numbers = [float(n) for n in re.findall(r"-?\d+\.?\d*", clip)]
        if len(numbers) == 4 and abs(numbers[2] - numbers[0]) <= 1 and abs(numbers[1] - numbers[3]) <= 1:
            return True
    clip_path = style.get("clip-path", "").replace(" ", "")
    if clip_path.startswith(("inset(50%", "inset(100%", "circle(0", "polygon(0000)")) or clip_path == "circle(0)":
        return True
    overflow_hidden = style.get("overflow", "").startswith(("hidden", "clip"))
    for prop in ("width", "height", "max-width", "max-height"):
        px = _px(style.get(prop, ""), font_px)
        if px is not None and px <= 1 and overflow_hidden:
            return True
    return False


def _font_px(style: dict[str, str], inherited: float) -> float:
    size = style.get("font-size")
    if size is None and "font" in style:
        m = re.search(r"(?:^|\s)(\d*\.?\d+(?:px|pt|em|rem|%)|0)(?:/|\s)", style["font"] + " ")
        size = m.group(1) if m else None
    if size is None:
        return inherited
    px = _px(size, inherited)
    return inherited if px is None else px


def _background(style: dict[str, str], inherited: Any) -> Any:
    image = style.get("background-image", "")
    shorthand = style.get("background", "")
    if ("url(" in image or "gradient" in image) or ("url(" in shorthand or "gradient" in shorthand):
        return None  # a picture may be behind the text: cannot tell its colour
    for value in (style.get("background-color"), shorthand.split(" ")[0] if shorthand else None):
        if value:
            color = _color(value)
            if color is not None and color.alpha >= 0.9:
                return color
    return inherited


def _hide_own_text(el: Any) -> bool:
    """Clear the element's own text (children keep theirs: they may restyle); True if text was there."""
    had = bool((el.text or "").strip()) or any((child.tail or "").strip() for child in el)
    el.text = None
    for child in el:
        child.tail = None
    return had


def drop_hidden(root: Any) -> int:
    """Remove from the lxml tree every passage a person would not see; returns how many."""
    rules = _sheet_rules(root)
    matched: dict[Any, dict[str, tuple[str, bool]]] = {}
    for selector, decls in rules:
        try:
            elements = selector(root)
        except Exception:  # noqa: BLE001 - a selector lxml cannot run is skipped
            continue
        for el in elements:
            mine = matched.setdefault(el, {})
            for prop, (value, important) in decls.items():
                if prop in mine and mine[prop][1] and not important:
                    continue
                mine[prop] = (value, important)
    white = tinycss2.color3.parse_color("white")
    body = root.find("body")
    start = body if body is not None else root
    dropped = 0
    stack: list[tuple[Any, _Inherited]] = [(start, _Inherited(_color("black"), white, 16.0, True))]
    while stack:
        el, parent = stack.pop()
        if not isinstance(el.tag, str):
            continue
        declared = dict(matched.get(el, {}))
        inline = el.get("style")
        if inline:
            for prop, (value, important) in _declarations(inline).items():
                if prop in declared and declared[prop][1] and not important:
                    continue
                declared[prop] = (value, important)
        style = {prop: value for prop, (value, _) in declared.items()}
        font_px = _font_px(style, parent.font_px)
        visibility = style.get("visibility")
        visible = parent.visible if visibility is None else visibility not in ("hidden", "collapse")
        opacity = style.get("opacity")
        try:
            transparent = opacity is not None and float(opacity.rstrip("%")) / (100 if "%" in opacity else 1) < 0.05
        except ValueError:
            transparent = False
        gone = (
            el.get("hidden") is not None
            or (el.get("aria-hidden") or "").lower() == "true"
            or style.get("display", "").startswith("none")
            or style.get("content-visibility", "") == "hidden"
            or transparent
            or not visible
            or _offscreen(style, font_px)
            or _clipped(style, font_px)
        )
        if gone and el is not start and el.getparent() is not None:
            if (el.text_content() or "").strip():
                dropped += 1
            el.drop_tree()  # keeps its tail, which belongs to the parent
            continue
        color = _color(style["color"]) if "color" in style else parent.color
        background = _background(style, parent.background)
        if (font_px < _TINY_PX or _invisible_on(color, background)) and _hide_own_text(el):
            dropped += 1
        here = _Inherited(color, background, font_px, visible)
        stack.extend((child, here) for child in reversed(el))
    return dropped


__all__ = ["drop_hidden"]
