"""A classifier's test results as ``metrics.json`` and one self-contained HTML report.

:func:`write_report` draws ``roc.png``, ``scores.png``, ``history.png``, ``confusion.png`` and
``features.png`` (the figures are in :mod:`rootml.plots`) and writes ``report.html`` with every
image embedded as a base64 data URI, inline CSS and no scripts, so the file can be mailed,
archived or opened offline. Everything is rendered in memory first and written only when all
of it succeeded, each file atomically. The HTML carries no timestamp, so the same inputs give
the same bytes with the same library versions.
"""

from __future__ import annotations

import base64
import gc
import html
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import plots
from .exceptions import DataError

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ small helpers


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        Path(tmp).chmod(0o644)  # mkstemp makes it private; results are meant to be read
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _nonfinite_path(doc: Any, where: str = "") -> str | None:
    """The key path of the first NaN/inf in a JSON-like document, or None."""
    if isinstance(doc, (float, np.floating)):
        return None if math.isfinite(doc) else (where or "the document")
    if isinstance(doc, np.ndarray):
        doc = doc.tolist()
    if isinstance(doc, Mapping):
        for k, v in doc.items():
            hit = _nonfinite_path(v, f"{where}.{k}" if where else str(k))
            if hit:
                return hit
    elif isinstance(doc, (list, tuple)):
        for i, v in enumerate(doc):
            hit = _nonfinite_path(v, f"{where}[{i}]")
            if hit:
                return hit
    return None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_metrics_json(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics`` as indented JSON, atomically (temporary file in the same folder,
    then ``os.replace``). NaN or inf anywhere raises :class:`DataError` naming its key path,
    and nothing is written."""
    path = Path(path)
    bad = _nonfinite_path(metrics)
    if bad:
        raise DataError(
            f"metrics must be finite numbers, {bad} is NaN or inf; nothing was written to {path}"
        )
    text = json.dumps(metrics, indent=1, allow_nan=False, default=_json_default) + "\n"
    _write_atomic(path, text.encode("utf-8"))
    return path


# ------------------------------------------------------------------ the HTML page

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d2330; background: #f4f5f7; margin: 0; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.1em; overflow-wrap: anywhere; }
h2 { font-size: 1.25em; margin: 1.6em 0 0.5em; padding-bottom: 4px;
     border-bottom: 1px solid #d8dbe2; }
p.lead { color: #505869; margin-top: 0; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.95em; }
th, td { border: 1px solid #d8dbe2; padding: 5px 10px; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #eef0f4; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { min-width: 18em; }
table.cm td { text-align: center; min-width: 6em; font-variant-numeric: tabular-nums; }
table.cm .sub { display: block; font-size: 0.8em; color: #505869; }
.verdict { padding: 8px 12px; border-radius: 4px; margin: 0.5em 0 1em; }
.ok { background: #e5f4ea; border-left: 4px solid #2e8b57; }
.warn { background: #fdf0dc; border-left: 4px solid #d9822b; }
figure { margin: 1em 0 2em; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto;
             border: 1px solid #e3e5ea; }
figcaption { font-size: 0.92em; color: #3c4352; margin-top: 0.6em; }
details { font-size: 0.9em; margin: 0.5em 0 1em; }
details p { overflow-wrap: anywhere; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    if isinstance(value, (Mapping, list, tuple)):
        return _e(json.dumps(value, default=_json_default, sort_keys=True))
    return _e(value)


def _kv_table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _summary_rows(metrics: Mapping[str, Any], names: list[str], ks: Mapping | None) -> list:
    k = len(names)
    rows: list[tuple[str, str]] = []
    if k == 2:
        rows.append((f"AUC ({_e(names[1])} vs {_e(names[0])})", f"{metrics['auc']:.4f}"))
        rule = f"P({_e(names[1])}) &gt; 0.5"
    else:
        rows.append(("AUC, macro average of one vs rest", f"{metrics['auc_macro']:.4f}"))
        rows.extend((f"AUC, {_e(n)} vs rest", f"{metrics['auc_ovr'][n]:.4f}") for n in names)
        rule = "highest probability"
    rows.append((f"Accuracy ({rule})", f"{metrics['accuracy']:.2%}"))
    rows.append(("Log loss (cross-entropy)", f"{metrics['log_loss']:.4f}"))
    rows.append(("Test events", f"{metrics['n_test']:,}"))
    rows.extend((f"Test events of {_e(n)}", f"{metrics['counts'][n]:,}") for n in names)
    if ks:
        for n, r in ks["per_class"].items():
            rows.append(
                (
                    f"KS train vs test, {_e(n)}",
                    f"p = {r['pvalue']:.3g} (D = {r['statistic']:.4f} on {_e(r['score'])})",
                )
            )
    return rows


def _confusion_html(confusion: np.ndarray, names: list[str]) -> str:
    totals = np.maximum(confusion.sum(axis=1), 1)
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    body = []
    for i, n in enumerate(names):
        cells = []
        for j in range(len(names)):
            frac = confusion[i, j] / totals[i]
            shade = f"background: rgba(33, 102, 172, {0.08 + 0.6 * frac:.3f})"
            cells.append(
                f'<td style="{shade}">{confusion[i, j]:,}<span class="sub">{frac:.1%}</span></td>'
            )
        body.append(f"<tr><th>{_e(n)}</th>{''.join(cells)}</tr>")
    return f'<table class="cm"><tr><th>true \\ predicted</th>{head}</tr>{"".join(body)}</table>'


def _figure_html(name: str, png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="{_e(name)}"><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _captions(names: list[str], h: Any) -> dict[str, str]:
    binary = len(names) == 2
    pos, neg = (_e(names[1]), _e(names[0])) if binary else ("a class", "the other classes")
    captions = {
        "roc": (
            f"<b>ROC curve</b> on the held-out test split. Each point is one threshold on the "
            f"score: the fraction of {pos} events selected (true positive rate) against the "
            f"fraction of {neg} events selected (false positive rate). Better classifiers bend "
            "toward the top-left corner; the dashed diagonal is a random guess. The AUC is the "
            f"probability that a random {pos} event scores higher than a random {neg} event."
            + (
                ""
                if binary
                else " Each curve treats one class as signal and the rest as background."
            )
        ),
        "scores": (
            "<b>Score distributions</b>, each normalised to unit area. Filled: test split; "
            "points with statistical error bars: training split. Points that follow the filled "
            "histograms mean the model treats unseen events like those it was trained on. A "
            "Kolmogorov&ndash;Smirnov p-value below 0.01 (in the legend) flags overtraining; "
            "with large samples it also flags differences too small to matter, so judge the "
            "agreement by eye as well."
        ),
        "history": (
            "<b>Training history</b>: loss and metrics per epoch on training and validation "
            "data. Both should fall and level off. A validation loss that rises while the "
            "training loss keeps falling is overtraining; the dotted line marks the epoch with "
            "the lowest validation loss."
        ),
        "confusion": (
            "<b>Confusion matrix</b> of the test split: rows are true classes, columns predicted "
            + (
                f"classes (predicted {pos} when P({pos}) &gt; 0.5). "
                if binary
                else "classes (the class with the highest probability). "
            )
            + "Colours and percentages are normalised per true class, so the diagonal is the "
            "fraction of each class classified correctly; the numbers are event counts."
        ),
    }
    if h is not None:
        captions["features"] = (
            "<b>Input features</b> after preprocessing (scaled into "
            f"[{h.lo:g}, {h.hi:g}]), one histogram per class, each normalised to unit area. "
            "Padding values (absent objects, such as jets beyond an event's multiplicity) are "
            "not drawn; each title gives the fraction of events where the feature is missing, "
            "per class in legend order. Features whose shapes differ between classes are the "
            "ones the classifier can use."
        )
    return captions


def _page(
    title: str,
    metrics: Mapping[str, Any],
    names: list[str],
    ks: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None,
    figures: list[str],
    omitted: list[str],
    n_features: int,
) -> str:
    confusion = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    k = len(names)
    lead = (
        f"Evaluation on the held-out test split: {metrics['n_test']:,} events, {k} classes "
        f"({', '.join(_e(n) for n in names)})."
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        (
            '<meta http-equiv="Content-Security-Policy" '
            "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        ),
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="lead">{lead}</p>',
        "<h2>Summary</h2>",
    ]
    if ks:
        css = "warn" if ks["overtraining_suspected"] else "ok"
        parts.append(f'<div class="verdict {css}">{_e(ks["verdict"])}</div>')
    parts.append(_kv_table(_summary_rows(metrics, names, ks)))
    parts.append("<h2>Confusion matrix</h2>")
    parts.append(_confusion_html(confusion, names))
    if extra:
        parts.append("<h2>Run</h2>")
        parts.append(_kv_table([(_e(key), _fmt(value)) for key, value in extra.items()]))
    parts.append("<h2>Plots</h2>")
    parts.extend(figures)
    if omitted:
        shown = n_features - len(omitted)
        parts.append(
            f"<details><summary>{len(omitted):,} of {n_features:,} features are not plotted "
            f"(only the first {shown} are)</summary><p>{_e(', '.join(omitted))}</p></details>"
        )
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


# ------------------------------------------------------------------ the entry point


def draw_aside(draw: Callable[[], bytes]) -> Callable[[], bytes]:
    """Start ``draw()`` (a figure's PNG bytes) in a forked process while the caller scores the
    model and draws the rest; returns a function that waits for it and returns the bytes.
    Without ``fork``, or if the child fails, it is drawn in the call. The child should use
    only matplotlib; fork before TensorFlow runs anything in this process where possible (a
    fork never copies TensorFlow's threads)."""
    if not hasattr(os, "fork"):
        return draw
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: draw, send, exit without running the parent's exit handlers
        # no garbage collection: a collected TensorFlow object of the parent's (a process that
        # has run TensorFlow, as a test session has) would be finalised here, in a process
        # without TensorFlow's threads, and crash it
        gc.disable()
        os.close(read_end)
        code = 1
        try:
            png = draw()
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(png)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)

    def wait() -> bytes:
        with os.fdopen(read_end, "rb") as pipe:
            png = pipe.read()
        _, status = os.waitpid(pid, 0)
        return png if status == 0 and png else draw()

    return wait


def _styled(plot: Callable[..., bytes], *args: Any) -> bytes:
    """``plot(*args, text)`` in the report's style, as a process of its own draws it."""
    with plots.style():
        return plot(*args, plots.Text())


def _drawn(png: bytes) -> Callable[[], bytes]:
    return lambda: png


def draw_history(history: Mapping[str, Sequence[float]]) -> bytes:
    """``history.png`` of a Keras ``History.history`` dict."""
    return _styled(plots.plot_history, plots.history_series(history))


def draw_features(h: Any) -> bytes:
    """``features.png`` of a :class:`rootml.metrics.FeatureHistograms`."""
    return _styled(plots.plot_features, h)


def write_report(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    *,
    test_scores: Any,
    test_y: Any,
    train_scores: Any | None,
    train_y: Any | None,
    classes: Sequence[str],
    history: Mapping[str, Sequence[float]] | None,
    histograms: Any | None,
    title: str,
    ks: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None = None,
    drawn: Mapping[str, Callable[[], bytes]] | None = None,
    test_w: Any | None = None,
    train_w: Any | None = None,
) -> dict[str, Path]:
    """Draw the plots and write ``report.html`` into ``out_dir``; return the paths by name.

    ``metrics`` is :func:`rootml.metrics.compute_metrics` output for ``test_scores`` and
    ``test_y``; ``ks`` is :func:`rootml.metrics.ks_overtraining` output or None.
    ``train_scores``/``train_y`` overlay the training split on ``scores.png`` (None to
    leave it out). ``history`` is a Keras ``History.history`` dict (``history.png`` is
    skipped when None); ``histograms`` a :class:`rootml.metrics.FeatureHistograms` or
    its ``to_json()`` dict (``features.png`` is skipped when None). ``extra`` is shown as a
    key/value table (bundle, digests, seed, ...). ``drawn`` maps a plot's name (``history``,
    ``features``) to a function returning its PNG, drawn elsewhere (:func:`draw_aside`, or
    read from the features step's folder) instead of here.

    Keys of the result: ``roc``, ``scores``, ``confusion``, ``history``, ``features`` (the
    PNGs drawn) and ``report`` (the HTML). Inputs are checked and everything is rendered
    before the first file is written.
    """
    from .metrics import FeatureHistograms, as_probabilities, check_labels

    out_dir = Path(out_dir)
    names = [str(c) for c in classes]
    if list(metrics.get("classes", [])) != names:
        raise DataError(
            f"the metrics are for classes {metrics.get('classes')!r}, the report for {names!r}; "
            "pass the compute_metrics output of the same classes"
        )
    k = len(names)
    test_p = as_probabilities(test_scores, k)
    test_lab = check_labels(test_y, k, "test labels")
    if len(test_p) != len(test_lab):
        raise DataError(f"{len(test_lab)} test labels but {len(test_p)} test score rows")
    train_p = train_lab = None
    if (train_scores is None) != (train_y is None):
        raise DataError("pass both train_scores and train_y, or neither")
    if train_scores is not None:
        train_p = as_probabilities(train_scores, k)
        train_lab = check_labels(train_y, k, "training labels")
        if len(train_p) != len(train_lab):
            raise DataError(f"{len(train_lab)} training labels but {len(train_p)} score rows")
    h = histograms
    if isinstance(h, Mapping):
        h = FeatureHistograms.from_json(h)
    if h is not None and list(h.classes) != names:
        raise DataError(f"the feature histograms are for classes {h.classes!r}, not {names!r}")
    panels = plots.history_series(history) if history else {}
    tw = None if test_w is None else np.asarray(test_w, dtype=np.float64)
    trw = None if train_w is None or train_p is None else np.asarray(train_w, dtype=np.float64)
    if tw is not None and len(tw) != len(test_lab):
        raise DataError(f"{len(tw)} test weights but {len(test_lab)} test labels")
    if trw is not None and len(trw) != len(train_lab):
        raise DataError(f"{len(trw)} training weights but {len(train_lab)} training labels")

    # the ROC curve and the confusion matrix are drawn in forked processes meanwhile
    confusion = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    drawn = dict(drawn or {})
    if "roc" not in drawn:
        drawn["roc"] = draw_aside(lambda: _styled(plots.plot_roc, metrics, names))
    if "confusion" not in drawn:
        drawn["confusion"] = draw_aside(lambda: _styled(plots.plot_confusion, confusion, names))
    text = plots.Text()
    pngs: dict[str, bytes] = {}
    with plots.style():
        scores = plots.plot_scores(
            test_p, test_lab, train_p, train_lab, names, ks, text, test_w=tw, train_w=trw
        )
        if panels and "history" not in drawn:
            drawn["history"] = _drawn(plots.plot_history(panels, text))
        if h is not None and h.features and "features" not in drawn:
            drawn["features"] = _drawn(plots.plot_features(h, text))
    pngs["roc"] = drawn["roc"]()
    pngs["scores"] = scores
    if panels:
        pngs["history"] = drawn["history"]()
    pngs["confusion"] = drawn["confusion"]()
    if h is not None and h.features:
        pngs["features"] = drawn["features"]()

    captions = _captions(names, h)
    alts = {
        "roc": "ROC curve",
        "scores": "Score distributions of training and test events",
        "history": "Loss and metrics per epoch",
        "confusion": "Confusion matrix",
        "features": "Input feature distributions per class",
    }
    figures = [_figure_html(n, png, alts[n], captions[n]) for n, png in pngs.items()]
    n_features = len(h.features) if h is not None else 0
    omitted = h.features[plots.MAX_FEATURE_PLOTS :] if h is not None else []
    page = _page(title, metrics, names, ks, extra, figures, omitted, n_features)

    paths: dict[str, Path] = {}
    for name, png in pngs.items():
        paths[name] = out_dir / f"{name}.png"
        _write_atomic(paths[name], png)
    paths["report"] = out_dir / "report.html"
    _write_atomic(paths["report"], page.encode("utf-8"))
    log.info("report: %d plots and report.html in %s", len(pngs), out_dir)
    return paths
