"""A batch at a glance: ``OUT/report.html``, one card per tomogram of a run's output folder.

summary.csv (collect.py) says which tomograms of a batch look odd; the report shows them. Each card
holds the tomogram's preview (preview.py: central XY and XZ slices, the particle class, context mask,
lamella and the workflow's picks near those slices) with its row of the summary (picks, picks per cubic
micrometre, score median, lamella, note) and, where ``picket-dask classify`` ran on its picks, the class gallery
and how many picks were flagged junk; the cards with a note first, then the rest by name. A
browser or JupyterLab opens the page; it refers to the previews beside each tomogram's results
(``OUT/NAME/preview-WF.png``), which are drawn once and again only when the picks are newer, so the
page of a growing batch is cheap to make again. Why by hand: a static page of a table and images
needs no templating library.
"""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path

import pandas as pd

from .collect import junk_flags, picks_scores, summary
from .errors import PicketError
from .io.picks import read_points
from .io.results import batch_runs
from .provenance import environment

REPORT = "report.html"
COLUMNS = ("n_picks", "picks_per_um3", "score_median", "lamella_found", "context_fraction", "voxel_size_A", "seconds")


def report(out: str | Path, workflow: str | None = None, redraw: bool = False) -> Path:
    """Write ``out/report.html`` for ``workflow`` (default: the first workflow of the first tomogram) over every
    tomogram folder in ``out``; previews drawn where missing or older than the picks (``redraw``: always)."""
    out = Path(out)
    folders, docs = batch_runs(out)
    have = sorted({wf for d in docs for wf in d.get("picks", {})})
    wf = workflow or next(iter(docs[0].get("picks", {})), None)
    if wf not in have:
        raise PicketError(workflow or out, f"has no picks in {out}" if workflow else "holds no picks",
                          f"give one of: {', '.join(have) or 'none (run the tomograms first)'}")
    t0 = time.perf_counter()
    runs = [(d, {wf: picks_scores(d["picks"][wf]["csv"])}) for d in docs if wf in d.get("picks", {})]
    table = summary(runs)
    cards = []
    for folder, d in zip(folders, docs):
        if wf not in d.get("picks", {}):
            continue
        row = table[table.tomogram == d["name"]].iloc[0]
        png = _preview(folder, d, wf, redraw)
        cards.append((bool(row.note), d["name"], _card(out, d["name"], row, png, _classes(out, folder, d, wf))))
    cards.sort(key=lambda c: (not c[0], c[1]))  # noted first, then by name
    target = out / REPORT
    tmp = out / f".{REPORT}.tmp-{os.getpid()}"
    made = {**environment(), "seconds": round(time.perf_counter() - t0, 3), "workflow": wf, "redraw": redraw}
    tmp.write_text(_page(out, wf, table, [c[2] for c in cards], len(docs), made))
    tmp.replace(target)
    return target


def _preview(folder: Path, doc: dict, wf: str, redraw: bool) -> Path | None:
    """``folder/preview-WF.png``, drawn when missing, older than the picks CSV or ``redraw``; None when the
    tomogram's image is gone (the card then says so)."""
    from .preview import preview

    png = folder / f"preview-{wf}.png"
    csv = Path(doc["picks"][wf]["csv"])
    if png.is_file() and not redraw and png.stat().st_mtime >= csv.stat().st_mtime:
        return png
    image = Path(doc.get("image") or "")
    if not image.exists():
        return None
    f, c, _ = wf.split("-")  # FEATURES-CLUSTERER-EXTRACTOR, as run.json names it
    picks = read_points(csv)
    preview(image, f"semantic-{f}-{c}", picks[["z", "y", "x"]].to_numpy(float), png, title=f"{doc['name']}: {wf}")
    return png


def _classes(out: Path, folder: Path, doc: dict, wf: str) -> str:
    """The card's line and gallery from ``picket-dask classify`` of these picks, where it ran on the current ones."""
    gallery = folder / "classes" / wf / "gallery.png"
    if not gallery.is_file():
        return ""
    junk = junk_flags(folder, wf, read_points(doc["picks"][wf]["csv"]))
    if junk is None:  # classes of earlier picks (the workflow ran again since)
        return "<p>classes: of earlier picks (run <code>picket-dask classify</code> again)</p>"
    return (f"<p>classes: {int(junk.sum())} of {len(junk)} picks flagged junk (<code>--drop-junk</code> leaves them out)</p>"
            f'<img src="{html.escape(os.path.relpath(gallery, out))}" alt="{html.escape(doc["name"])} classes" loading="lazy">')


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _card(out: Path, name: str, row: pd.Series, png: Path | None, classes: str = "") -> str:
    img = (f'<img src="{html.escape(os.path.relpath(png, out))}" alt="{html.escape(name)} preview" loading="lazy">'
           if png else "<p>no preview: the tomogram's image is not in its folder</p>")
    facts = " &middot; ".join(f"{k.replace('_', ' ')} {html.escape(_fmt(row[k]))}" for k in COLUMNS if k in row)
    note = f'<p class="note">{html.escape(row.note)}</p>' if row.note else ""
    look = f"<p><code>picket-dask view {html.escape(str(out / name))}</code> opens it in napari</p>"
    return (f'<div class="card" id="{html.escape(name)}"><h3>{html.escape(name)}</h3>{note}<p>{facts}</p>{img}{classes}'
            f"{look}</div>")


def _page(out: Path, wf: str, table: pd.DataFrame, cards: list[str], n_folders: int, made: dict) -> str:
    noted = int((table.note != "").sum())
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in table.columns) + "</tr>"
                   for _, r in table.iterrows())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    style = ("body{font-family:sans-serif;margin:1em} .card{display:inline-block;vertical-align:top;width:46em;margin:.5em;"
             "padding:.5em;border:1px solid #ccc} .card img{width:100%} .note{color:#b00;font-weight:bold} "
             "table{border-collapse:collapse;font-size:85%} td,th{border:1px solid #ddd;padding:2px 6px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>picket-dask: {html.escape(out.name)} {html.escape(wf)}"
            f"</title><style>{style}</style></head><body><h1>{html.escape(out.name)}: {html.escape(wf)}</h1>"
            f"<p>{len(table)} of {n_folders} tomogram folders with {html.escape(wf)} picks; {noted} with a note (first). "
            "Previews: central XY and XZ slices, particle class red, context blue, lamella green, picks within 5 slices "
            f"cyan.</p>{''.join(cards)}<h2>summary</h2><table><tr>{head}</tr>{rows}</table>"
            f"<h2>made by</h2><pre>{html.escape(json.dumps(made, indent=1))}</pre></body></html>\n")
