"""``report.html``: one static page per run folder (no server, no script, nothing fetched from
elsewhere) with the figures of ``metrics.json``, every plot, the configuration and links to the
folder's files. It is made from the files themselves, so it shows what the run wrote.

Every figure taken from ``metrics.json`` sits in an element with ``data-key`` (its path there,
dotted: ``seconds.train``, ``per_class.3.snn_recall``) and ``data-value`` (its value as JSON), so
a reader or a test can hold the page to the file. Keys this module does not know are shown too.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.metrics import worst_classes
from pipeline.store import visible_text

PAGE = "report.html"

#: The plots a run writes, in page order: file, heading, how to read it.
PLOTS = (
    ("online_accuracy.png", "Online accuracy",
     "Each training sample is answered before it is learned: the running share of right answers "
     "(dotted lines: where a later pass begins)."),
    ("confusion.png", "Confusion",
     "Rows: true class; columns: the answer, then no answer. Colour: share of the row; numbers: "
     "counts. With many classes, the most confused ones, and a column for answers outside them."),
    ("per_class_recall.png", "Per-class recall",
     "Each class's SNN recall against the linear probe's (where it ran) and against how many "
     "training samples the class had."),
    ("spike_raster.png", "Spike raster",
     "L-neuron spikes of copy 0 on a few evaluation samples, grouped and coloured by class "
     "column; above each sample its true class and the ensemble's answer."),
    ("weights.png", "Learned prototypes",
     "Per class, the mean weight of its column's neurons beside the class's mean input rate, both "
     "on colour scales centred on zero; r: their correlation."),
)

#: Headline rows: (label, key of the accuracy, key of the no-answer rate or None).
CLASSIFIERS = (("CoLaNET (SNN)", "snn_accuracy", "no_answer_rate"),
               ("linear probe", "probe_accuracy", None),
               ("nearest class mean", "ncm_accuracy", None))

#: Keys shown elsewhere on the page (per_class) or too large for a table (one value per class).
NOT_IN_FIGURES = frozenset({"per_class", "per_class_accuracy", "confusion"})

#: A key holding one of these words is a share in [0, 1], shown as a percentage.
SHARE_WORDS = ("accuracy", "rate", "recall", "precision", "f1")

LONG_LIST = 16  # a configuration list longer than this is summarised (config.json holds it)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
nav a { margin-right: 1em; }
"""


def is_share(key: str) -> bool:
    """Whether the figure under ``key`` (its last part) is a share shown as a percentage."""
    last = key.rsplit(".", 1)[-1]
    return any(word in last for word in SHARE_WORDS)


def shown_value(key: str, value: Any) -> str:
    """How the page writes a figure of metrics.json: shares as percentages with two decimals,
    other floats with 6 significant digits, integers with thousands separators, null as '–'."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2%}" if is_share(key) else f"{value:.6g}"
    return str(value)


def _cell(key: str, value: Any) -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    css = ' class="number"' if numeric else ""
    return (f'<td{css} data-key="{html.escape(key)}" '
            f'data-value="{html.escape(json.dumps(value))}">{html.escape(shown_value(key, value))}'
            f'</td>')


def scalar_figures(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` of every single figure of ``metrics`` (numbers, text, booleans,
    null), nested objects flattened, in file order; lists and :data:`NOT_IN_FIGURES` left out."""
    found = []
    for key, value in metrics.items():
        path = f"{prefix}{key}"
        if not prefix and key in NOT_IN_FIGURES:
            continue
        if isinstance(value, dict):
            found += scalar_figures(value, f"{path}.")
        elif not isinstance(value, list):
            found.append((path, value))
    return found


def _summarised(value: Any) -> Any:
    """``value`` with each list longer than :data:`LONG_LIST` replaced by a note of its length."""
    if isinstance(value, dict):
        return {k: _summarised(v) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > LONG_LIST:
            return f"<{len(value)} values: see config.json>"
        return [_summarised(v) for v in value]
    return value


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _headline(metrics: dict[str, Any]) -> list[str]:
    rows = ["<table><tr><th>classifier</th><th>accuracy</th><th>no answer</th></tr>"]
    for label, accuracy, no_answer in CLASSIFIERS:
        if accuracy in metrics:
            rows.append(f"<tr><th>{html.escape(label)}</th>{_cell(accuracy, metrics[accuracy])}"
                        + (_cell(no_answer, metrics[no_answer]) if no_answer in metrics
                           else "<td>–</td>") + "</tr>")
    rows.append("</table>")
    return rows


def _per_class(entries: list[dict[str, Any]]) -> list[str]:
    fields = list(dict.fromkeys(k for e in entries for k in e))
    order = {id(e): i for i, e in enumerate(entries)}
    ranked = worst_classes(entries, len(entries)) if all("snn_recall" in e for e in entries) \
        else entries
    out = [f"<details{' open' if len(entries) <= 100 else ''}><summary>{len(entries)} classes, "
           f"lowest SNN recall first</summary><table><tr>"
           + "".join(f"<th>{html.escape(f)}</th>" for f in fields) + "</tr>"]
    for e in ranked:
        i = order[id(e)]
        out.append("<tr>" + "".join(_cell(f"per_class.{i}.{f}", e[f]) if f in e else "<td></td>"
                                    for f in fields) + "</tr>")
    out.append("</table></details>")
    return out


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def render(run_dir: Path, metrics: dict[str, Any], config: dict[str, Any] | None) -> str:
    """The page of a run folder holding ``metrics`` (and ``config``, None when unreadable)."""
    name = run_dir.name
    split = metrics.get("eval_split", "?")
    body = [f"<h1>Run {html.escape(name)}</h1>",
            '<nav><a href="#figures">figures</a><a href="#classes">classes</a>'
            '<a href="#plots">plots</a><a href="#configuration">configuration</a>'
            '<a href="#files">files</a></nav>',
            f"<p>Store <code>{html.escape(str(metrics.get('store', '?')))}</code>; evaluated on "
            f"the <strong>{html.escape(str(split))}</strong> split. Figures from "
            f'<a href="metrics.json">metrics.json</a>.</p>',
            *_headline(metrics),
            '<h2 id="figures">All figures</h2><table><tr><th>key</th><th>value</th></tr>']
    for key, value in scalar_figures(metrics):
        body.append(f"<tr><th>{html.escape(key)}</th>{_cell(key, value)}</tr>")
    body.append("</table>")
    if isinstance(metrics.get("confusion"), str):  # 1,000+ classes: the matrix is a file
        body.append(f'<p>Confusion matrix: <a href="{quote(metrics["confusion"])}">'
                    f'{html.escape(metrics["confusion"])}</a> (NumPy).</p>')
    body.append('<h2 id="classes">Per class</h2>')
    entries = metrics.get("per_class")
    if isinstance(entries, list) and entries and all(isinstance(e, dict) for e in entries):
        body += _per_class(entries)
    else:
        body.append("<p>metrics.json holds no per-class table.</p>")
    body.append('<h2 id="plots">Plots</h2>')
    known = {file for file, _, _ in PLOTS}
    others = sorted(p.name for p in run_dir.glob("*.png") if p.name not in known)
    for file, heading, caption in (*PLOTS, *((f, f, "") for f in others)):
        if (run_dir / file).is_file():
            body.append(f'<figure><h3>{html.escape(heading)}</h3><a href="{quote(file)}">'
                        f'<img src="{quote(file)}" alt="{html.escape(heading)}"></a>'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    body.append('<h2 id="configuration">Configuration</h2>')
    if config is None:
        body.append("<p>config.json is missing or unreadable.</p>")
    else:
        body.append('<p>From <a href="config.json">config.json</a> (long lists summarised).</p>')
        for key, value in config.items():
            body.append(f"<h3>{html.escape(key)}</h3><pre>"
                        f"{html.escape(json.dumps(_summarised(value), indent=2))}</pre>")
    body.append('<h2 id="files">Files</h2><ul>')
    for path in sorted(run_dir.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name != PAGE \
                and not path.name.endswith(".tmp"):
            # A name that is not UTF-8 (a user's file) holds surrogates: quote its bytes, show
            # them escaped, so the page can still be written as UTF-8.
            body.append(f'<li><a href="{quote(os.fsencode(path.name))}">'
                        f'{html.escape(visible_text(path.name))}</a> '
                        f"({_size(path.stat().st_size)})</li>")
    body.append("</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>annsnn run {html.escape(name)}</title>\n<style>{STYLE}</style>\n</head>\n"
            "<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def write_html_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` in a run folder from its ``metrics.json`` and ``config.json``
    (atomically: a reader never sees half a page); returns its path."""
    run_dir = Path(run_dir)
    metrics = _read_json(run_dir / "metrics.json")
    if metrics is None:
        raise ValueError(f"{run_dir / 'metrics.json'}: missing or not a JSON object")
    page = run_dir / PAGE
    temporary = run_dir / f".{PAGE}.tmp"
    temporary.write_text(render(run_dir, metrics, _read_json(run_dir / "config.json")),
                         encoding="utf-8")
    os.replace(temporary, page)
    return page
