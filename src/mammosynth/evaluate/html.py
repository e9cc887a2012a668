"""A tiny, dependency-free HTML page builder for reports (demo and evaluate).

Figures are PNG files beside the page (relative links), so a report folder can be zipped,
mailed or served as is.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

from mammosynth.io import write_text_atomic

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1100px;color:#222;line-height:1.45}
h1{font-size:1.7rem;margin-bottom:.2rem} h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.sub{color:#666;margin-top:0} table{border-collapse:collapse;margin:.6rem 0} td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left;font-size:.92rem}
th{background:#f4f4f4} img{max-width:100%;border:1px solid #ddd;margin:.3rem 0} figure{margin:.8rem 0} figcaption{color:#555;font-size:.9rem}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5rem .8rem;margin:.6rem 0} .ok{color:#1a7f37} .bad{color:#b42318}
code{background:#f4f4f4;padding:0 .25rem;border-radius:3px}
"""


class HtmlReport:
    """Accumulate sections; ``write(path)`` writes the page atomically."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self.parts: list[str] = []

    def h2(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def p(self, text: str, cls: str | None = None) -> None:
        c = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{c}>{html.escape(text)}</p>")

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def note(self, text: str) -> None:
        self.parts.append(f'<div class="note">{html.escape(text)}</div>')

    def figure(self, src: str | Path, caption: str = "", width: int | None = None) -> None:
        w = f' style="width:{width}px"' if width else ""
        self.parts.append(
            f'<figure><img src="{html.escape(str(src))}"{w} alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def render(self) -> str:
        sub = f'<p class="sub">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(self.title)}</title>"
                f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>{sub}{''.join(self.parts)}</body></html>\n")

    def write(self, path: str | Path) -> Path:
        write_text_atomic(path, self.render())
        return Path(path)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
