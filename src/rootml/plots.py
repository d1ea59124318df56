"""The figures of the evaluation report, each rendered in memory to PNG bytes.

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot, so no backend or global
figure state is touched) inside :func:`style`, a context that starts from matplotlib's
defaults, so a user's ``matplotlibrc`` does not change the output. When mplhep is installed
its CMS style (fonts, ticks, colours) is used, at sizes suited to a report; no experiment
label is drawn. PNGs carry no software version, so the same inputs give the same bytes with
the same library versions. :mod:`rootml.report` puts them into the HTML page.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import DataError

#: features.png shows at most this many features
MAX_FEATURE_PLOTS = 36
#: bins of the score histograms over [0, 1]
SCORE_BINS = 40

_RC: dict[str, Any] = {
    "font.size": 11,
    "axes.titlesize": "medium",
    "axes.labelsize": "medium",
    "xtick.labelsize": "small",
    "ytick.labelsize": "small",
    "legend.fontsize": "small",
    "legend.frameon": False,
    "axes.linewidth": 1.0,
    "lines.linewidth": 1.8,
    "xtick.major.size": 5,
    "xtick.minor.size": 2.5,
    "ytick.major.size": 5,
    "ytick.minor.size": 2.5,
    "xtick.major.pad": 4,
    "ytick.major.pad": 4,
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "savefig.facecolor": "white",
    # class and feature names are plain text, never mathtext ("$" is common in branch names)
    "text.parse_math": False,
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """matplotlib defaults, then the CMS style if mplhep is installed, then report sizes."""
    import matplotlib.style

    styles: list[Any] = ["default"]
    try:
        import mplhep
    except ImportError:
        pass
    else:
        styles.append(mplhep.style.CMS)
        # list the fonts themselves so glyphs missing from TeX Gyre Heros fall back to DejaVu
        styles.append({"font.family": ["TeX Gyre Heros", "DejaVu Sans"]})
    styles.append(_RC)
    with matplotlib.style.context(styles):
        yield


class Text:
    """Make user strings safe to draw: characters no bundled font has become "?" (they
    would raise a missing-glyph warning), long names are shortened, and a leading "_"
    (which hides a legend entry) gets a space in front."""

    def __init__(self) -> None:
        import matplotlib as mpl
        from matplotlib.ft2font import FT2Font

        font = Path(mpl.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        self._known = set(FT2Font(str(font)).get_charmap())

    def __call__(self, text: Any, limit: int = 60) -> str:
        s = "".join(ch if ord(ch) in self._known else "?" for ch in str(text))
        s = s.replace("\n", " ")
        if len(s) > limit:
            s = s[: limit - 1] + "\u2026"
        return " " + s if s.startswith("_") else s


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _colors(n: int) -> list[Any]:
    import matplotlib as mpl

    cycle = [p["color"] for p in mpl.rcParams["axes.prop_cycle"]]
    if n <= len(cycle):
        return cycle[:n]
    return [mpl.colormaps["tab20"](i % 20) for i in range(n)]


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    """Rows and columns for n panels, at most max_cols wide, rows filled evenly (4 -> 2 x 2)."""
    rows = math.ceil(n / max_cols)
    return rows, math.ceil(n / rows)


# ------------------------------------------------------------------ the figures


def plot_roc(metrics: Mapping[str, Any], names: list[str], text: Text) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.8), layout="constrained")
    ax = fig.add_subplot()
    binary = len(names) == 2
    curves = metrics["roc"]
    for (name, curve), color in zip(curves.items(), _colors(len(curves)), strict=True):
        if binary:
            label = f"{text(names[1], 30)} vs {text(names[0], 30)}, AUC = {metrics['auc']:.4f}"
        else:
            label = f"{text(name, 30)} vs rest, AUC = {metrics['auc_ovr'][name]:.4f}"
        ax.plot(curve["fpr"], curve["tpr"], color=color, label=label)
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1.2, label="random guess, AUC = 0.5")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    if binary:
        ax.set_xlabel(f"False positive rate ({text(names[0], 30)} selected)")
        ax.set_ylabel(f"True positive rate ({text(names[1], 30)} selected)")
    else:
        ax.set_xlabel("False positive rate (other classes selected)")
        ax.set_ylabel("True positive rate (class selected)")
    ax.legend(loc="lower right")
    return _png(fig)


def _density(
    values: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-area histogram of ``values`` (weighted by ``weights`` when given: the sum of
    weights per bin, its error the root of the sum of squared weights) and its error per bin."""
    if weights is None:
        counts, _ = np.histogram(values, bins=edges)
        norm = max(len(values), 1) * np.diff(edges)
        return counts / norm, np.sqrt(counts) / norm
    sums, _ = np.histogram(values, bins=edges, weights=weights)
    squares, _ = np.histogram(values, bins=edges, weights=np.square(weights))
    total = float(np.sum(weights))
    norm = (total if total != 0 else 1.0) * np.diff(edges)
    return sums / norm, np.sqrt(squares) / abs(norm)


def _score_panel(
    ax: Any,
    edges: np.ndarray,
    groups: list[tuple[str, tuple, tuple | None, str]],
    colors: list[Any],
    weighted: bool = False,
) -> None:
    """Filled test histograms and train points for each (label, (test, w), (train, w), ks)
    group; a None weight array is unweighted."""
    centres = (edges[1:] + edges[:-1]) / 2
    for (label, (test, test_w), train_pair, ks_text), color in zip(groups, colors, strict=True):
        train, train_w = train_pair if train_pair is not None else (None, None)
        dens, _ = _density(test, edges, test_w)
        ax.stairs(dens, edges, fill=True, alpha=0.3, color=color, label=f"{label} (test)")
        ax.stairs(dens, edges, color=color, lw=1.2)
        if train is not None and len(train):
            tdens, terr = _density(train, edges, train_w)
            ax.errorbar(
                centres,
                tdens,
                yerr=terr,
                fmt="o",
                ms=3.5,
                lw=1.0,
                color=color,
                label=f"{label} (train){ks_text}",
            )
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(bottom=0.0)
    ax.set_ylabel("Weighted density (unit area)" if weighted else "Density (unit area)")
    ax.legend(loc="upper center")


def plot_scores(
    test_p: np.ndarray,
    test_y: np.ndarray,
    train_p: np.ndarray | None,
    train_y: np.ndarray | None,
    names: list[str],
    ks: Mapping[str, Any] | None,
    text: Text,
    test_w: np.ndarray | None = None,
    train_w: np.ndarray | None = None,
) -> bytes:
    """The score distributions per class, test filled and train as points; with event weights
    (``test_w``, ``train_w``) the histograms are weighted, as the analysis counts events."""
    from matplotlib.figure import Figure

    k = len(names)
    weighted = test_w is not None

    def pick(values: np.ndarray, weights: np.ndarray | None, mask: np.ndarray, col: int):
        return values[mask, col], (None if weights is None else weights[mask])

    edges = np.linspace(0.0, 1.0, SCORE_BINS + 1)
    per_class = (ks or {}).get("per_class", {})

    def ks_text(name: str) -> str:
        hit = per_class.get(name)
        return f", KS p = {hit['pvalue']:.3g}" if hit else ""

    def train_of(col: int, mask_class: int, invert: bool = False) -> tuple | None:
        if train_p is None or train_y is None:
            return None
        mask = (train_y != mask_class) if invert else (train_y == mask_class)
        return pick(train_p, train_w, mask, col)

    if k == 2:
        fig = Figure(figsize=(7.2, 5.6), layout="constrained")
        ax = fig.add_subplot()
        groups = [
            (text(n, 30), pick(test_p, test_w, test_y == c, 1), train_of(1, c), ks_text(n))
            for c, n in enumerate(names)
        ]
        _score_panel(ax, edges, groups, _colors(2), weighted)
        ax.set_xlabel(f"Score P({text(names[1], 30)})")
        ax.set_ylim(top=ax.get_ylim()[1] * 1.35)  # room for the legend
        return _png(fig)

    rows, cols = _grid(k, 3)
    fig = Figure(figsize=(5.0 * cols, 4.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for c, name in enumerate(names):
        ax = axes[c]
        groups = [
            (text(name, 24), pick(test_p, test_w, test_y == c, c), train_of(c, c), ks_text(name)),
            (
                "other classes",
                pick(test_p, test_w, test_y != c, c),
                train_of(c, c, invert=True),
                "",
            ),
        ]
        _score_panel(ax, edges, groups, _colors(2), weighted)
        ax.set_xlabel(f"Score P({text(name, 24)})")
        ax.set_ylim(top=ax.get_ylim()[1] * 1.45)
    for ax in axes[k:]:
        ax.set_axis_off()
    return _png(fig)


def history_series(history: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """{"loss": {"training": [...], "validation": [...]}, ...} in first-seen order: the loss
    and each metric pair (``x`` and ``val_x``); lone series such as the learning rate are
    left out."""
    panels: dict[str, dict[str, np.ndarray]] = {}
    for key, values in history.items():
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(
                f"history[{key!r}] must be a list of numbers per epoch, got {values!r:.80}"
            ) from None
        if arr.ndim != 1:
            raise DataError(f"history[{key!r}] must be a list per epoch, got shape {arr.shape}")
        name = str(key)
        base = name[4:] if name.startswith("val_") and len(name) > 4 else name
        which = "validation" if base != name else "training"
        panels.setdefault(base, {})[which] = arr
    # the loss, and every metric with both a training and a validation series
    return {b: p for b, p in panels.items() if b == "loss" or len(p) == 2}


def plot_history(panels: Mapping[str, Mapping[str, np.ndarray]], text: Text) -> bytes:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows, cols = _grid(len(panels), 3)
    fig = Figure(figsize=(4.1 * cols, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colors = _colors(2)
    val_loss = panels.get("loss", {}).get("validation")
    best = (
        int(np.nanargmin(val_loss)) + 1
        if val_loss is not None and np.isfinite(val_loss).any()
        else None
    )
    for ax, (base, series) in zip(axes, panels.items(), strict=False):
        for (which, values), color in zip(series.items(), colors, strict=False):
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, values, color=color, marker="o", ms=3, label=which)
        if best is not None:
            label = f"lowest val_loss (epoch {best})" if base == "loss" else None
            ax.axvline(best, color="0.4", ls=":", lw=1.2, label=label)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(text(base, 30))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="best")
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    return _png(fig)


def plot_confusion(confusion: np.ndarray, names: list[str], text: Text) -> bytes:
    from matplotlib.figure import Figure

    k = len(names)
    totals = confusion.sum(axis=1, keepdims=True)
    frac = confusion / np.maximum(totals, 1)
    size = max(4.4, 0.8 * k + 2.4)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fontsize = max(6.0, 12.0 - k)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{frac[i, j]:.1%}\n{confusion[i, j]:,}",
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if frac[i, j] > 0.55 else "black",
            )
    labels = [text(n, 20) for n in names]
    ax.set_xticks(range(k), labels, rotation=30 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), labels)
    ax.minorticks_off()
    ax.tick_params(top=False, right=False, direction="out")
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    fig.colorbar(image, ax=ax, label="Fraction of the true class", shrink=0.85)
    return _png(fig)


def _missing_text(fractions: np.ndarray) -> str:
    parts = []
    for f in fractions:
        if f == 0:
            parts.append("0%")
        elif f < 0.005:
            parts.append("<1%")
        else:
            parts.append(f"{100 * f:.0f}%")
    return "missing " + " | ".join(parts)


def plot_features(h: Any, text: Text) -> bytes:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    n_show = min(len(h.features), MAX_FEATURE_PLOTS)
    rows, cols = _grid(n_show, 6)
    # a fixed layout in inches: constrained layout takes seconds on a 6 x 6 grid
    cell_w, cell_h, left, right, top, bottom = 2.35, 2.0, 0.42, 0.15, 0.8, 0.3
    gap_w, gap_h = 0.4, 0.62
    fig_w, fig_h = cell_w * cols, cell_h * rows + top - gap_h + bottom
    ax_w = (fig_w - left - right - gap_w * (cols - 1)) / cols
    ax_h = (fig_h - top - bottom - gap_h * (rows - 1)) / rows
    fig = Figure(figsize=(fig_w, fig_h))
    grid = {
        "left": left / fig_w,
        "right": 1 - right / fig_w,
        "top": 1 - top / fig_h,
        "bottom": bottom / fig_h,
        "wspace": gap_w / ax_w,
        "hspace": gap_h / ax_h,
    }
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw=grid).ravel()
    colors = _colors(len(h.classes))
    width = np.diff(h.edges)
    n_events = np.maximum(h.n_events, 1)
    handles: dict[int, Any] = {}  # the first line drawn of each class, for the legend
    for f in range(n_show):
        ax = axes[f]
        for c, color in enumerate(colors):
            counts = h.counts[c, f]
            total = counts.sum()
            if total == 0:
                continue
            line = ax.stairs(counts / (total * width), h.edges, color=color, lw=1.3)
            handles.setdefault(c, line)
        missing = h.missing[:, f] / n_events
        ax.set_title(f"{text(h.features[f], 30)}\n{_missing_text(missing)}", fontsize=9)
        ax.set_xlim(h.lo, h.hi)
        ax.set_ylim(bottom=0.0)
        ax.minorticks_off()
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_locator(MaxNLocator(4))
        ax.tick_params(labelsize=7.5, which="both")
    for ax in axes[n_show:]:
        ax.set_axis_off()
    order = sorted(handles)
    fig.legend(
        [handles[c] for c in order],
        [text(h.classes[c], 30) for c in order],
        loc="upper center",
        bbox_to_anchor=(0.5, 1.0 - 0.05 / fig_h),
        ncols=min(len(order), 6),
        fontsize=10,
    )
    return _png(fig)
