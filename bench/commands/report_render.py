"""The report as Markdown and as one self-contained HTML page (images embedded as data: URIs, no
script, no network), from one list of sections."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

# A section: (heading level, title, parts); a part is ("table", headers, rows), ("text", str)
# or ("figure", caption, path to a PNG).
Section = tuple[int, str, list]

_URL = re.compile(r"https?://[^\s<>\"')]+")
STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
         "th{background:#f0f0f0}img{max-width:100%}figure{margin:1em 0}")


def _md_table(headers, rows) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _html_cell(text: str) -> str:
    escaped = html.escape(str(text))
    return _URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped)


def _html_table(headers, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(title: str, intro: list[str], sections: list[Section]) -> tuple[str, str]:
    """(Markdown, HTML) of the sections; figures are linked by file name in Markdown, embedded in HTML."""
    md = [f"# {title}", ""] + [x for line in intro for x in (line, "")]
    body = [f"<h1>{html.escape(title)}</h1>"] + [f"<p>{_html_cell(line)}</p>" for line in intro]
    for level, heading, parts in sections:
        md += [f"{'#' * level} {heading}", ""]
        body.append(f"<h{level}>{html.escape(heading)}</h{level}>")
        for part in parts:
            if part[0] == "table":
                md += [_md_table(part[1], part[2]), ""]
                body.append(_html_table(part[1], part[2]))
            elif part[0] == "text":
                md += [part[1], ""]
                body.append(f"<p>{_html_cell(part[1])}</p>")
            else:
                caption, path = part[1], Path(part[2])
                md += [f"![{caption}]({path.name})", ""]
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
    return "\n".join(md), page
