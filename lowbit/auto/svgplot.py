"""A dependency-free SVG of the size-error frontier (used by `AutoPlan.plot` for .svg paths without matplotlib)."""

from __future__ import annotations

import math
from html import escape

W, H, L, R, T, B = 640, 400, 70, 20, 20, 50  # canvas and margins (left, right, top, bottom), px


def frontier_svg(frontier: list[tuple[float, float]], uniform: dict[str, tuple[float, float]],
                 plan: tuple[float, float], xlabel: str, ylabel: str) -> str:
    """frontier: [(x, error)] (a line); uniform: {label: (x, error)} (crosses); plan: (x, error) (a red dot).
    The y axis is log10(error); errors <= 0 are drawn at the axis floor."""
    pts = [*frontier, *uniform.values(), plan]
    xs = [x for x, _ in pts]
    ys = [math.log10(e) for _, e in pts if e > 0 and math.isfinite(e)] or [0.0]
    x0, x1 = 0.0, max(xs) * 1.05 or 1.0
    y0, y1 = math.floor(min(ys)), math.ceil(max(ys)) + (1 if math.floor(min(ys)) == math.ceil(max(ys)) else 0)

    def px(x: float, e: float) -> tuple[float, float]:
        ly = math.log10(e) if e > 0 and math.isfinite(e) else y0
        return L + (x - x0) / (x1 - x0) * (W - L - R), T + (y1 - ly) / (y1 - y0) * (H - T - B)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           'font-size="11">', f'<rect width="{W}" height="{H}" fill="white"/>']
    for d in range(y0, y1 + 1):  # horizontal grid, one line per decade
        _, y = px(x0, 10.0 ** d)
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">1e{d}</text>')
    for i in range(0, int(x1) + 1, max(1, int(x1) // 8)):
        x, _ = px(i, 10.0 ** y0)
        out.append(f'<text x="{x:.1f}" y="{H - B + 16}" text-anchor="middle">{i}</text>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 10}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text x="14" y="{(T + H - B) / 2}" transform="rotate(-90 14 {(T + H - B) / 2})" '
               f'text-anchor="middle">{escape(ylabel)}</text>')
    line = " ".join(f"{a:.1f},{b:.1f}" for a, b in (px(x, e) for x, e in frontier))
    out.append(f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for label, (x, e) in uniform.items():
        a, b = px(x, e)
        out.append(f'<path d="M{a - 4:.1f},{b - 4:.1f}l8,8m0,-8l-8,8" stroke="gray"/>')
        out.append(f'<text x="{a + 5:.1f}" y="{b - 5:.1f}" fill="gray" font-size="8">{escape(label)}</text>')
    a, b = px(*plan)
    out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="5" fill="red"/>')
    out.append(f'<text x="{W - R - 4}" y="{T + 12}" text-anchor="end"><tspan fill="#1f77b4">— auto plans '
               '(estimated)</tspan>  <tspan fill="gray">× uniform (estimated)</tspan>  <tspan fill="red">● this plan '
               '(measured)</tspan></text>')
    return "\n".join([*out, "</svg>\n"])
