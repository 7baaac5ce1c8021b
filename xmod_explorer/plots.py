"""Plotly figures built from result objects; no model code and no math beyond reshaping."""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from xmod_explorer.classify import Classification, ProbeTraining, TransferResult
from xmod_explorer.languages import EXTRA_NAMES, LANGUAGE_NAMES
from xmod_explorer.lens import AdapterMix, LogitLens
from xmod_explorer.masks import MaskPrediction
from xmod_explorer.projection import Projection
from xmod_explorer.scoring import LanguageScores
from xmod_explorer.similarity import AdapterComparison, SentenceComparison
from xmod_explorer.stats import ALPHA

# Above this many languages, side-by-side bar panels get unreadable and slow to draw; a heatmap scales.
MAX_BAR_PANELS = 4
COLUMNS = 4
# Above this many cells a heatmap prints nothing in them (hover still gives every value): each printed label is
# text the browser lays out and measures, and thousands of them held the page for seconds at 81 languages.
MAX_CELL_LABELS = 400
# Above this many rows a heatmap's rows shrink and lose their tick labels (hover names each row).
MAX_LABELLED_ROWS = 80
# Above this many languages a chart draws no trace (and no legend entry) per language: a legend of 81 entries, and
# 81 traces, held the browser's main thread for half a second (issue 16). Lines become a languages x layers heatmap
# and a scatter one trace coloured point by point; hover still gives every exact value.
MAX_LINES = 12
# Above this many token rows the fill-mask heatmap keeps the most probable ones (the table and CSV have them all).
MAX_TOKEN_ROWS = 30


def _layout(figure: go.Figure, title: str, height: int | None = None) -> go.Figure:
    """Every chart's frame: the colour-blind-safe palette for anything not coloured by language, and transparent
    backgrounds so that the page's light or dark theme shows through (ui/layout.py's CSS recolours the text)."""
    figure.update_layout(
        title=title,
        template="plotly_white",
        colorway=PALETTE,
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        margin=dict(l=60, r=20, t=60, b=40),
        height=height,
        font=dict(size=13),
    )
    return figure


def warm_up() -> go.Figure:
    """The smallest figure: drawing it once loads Plotly in the browser (see ui/layout.py)."""
    return go.Figure(go.Scatter(x=[0], y=[0]))


def mask_probabilities(prediction: MaskPrediction, mask_number: int = 1) -> go.Figure:
    """Top-k probabilities per language for one mask: a bar panel per language for a few, else a heatmap of
    tokens x adapters (one chart with many panels costs the browser far more to draw)."""
    slot = prediction.masks[mask_number - 1]
    title = (
        f"Mask {mask_number} of {len(prediction.masks)}: top-{len(next(iter(slot.predictions.values())))} per adapter"
    )
    codes = prediction.languages
    if len(codes) > MAX_BAR_PANELS:
        # One row per vocabulary id: pieces that read alike stay apart (their labels then show the id).
        texts: dict[int, str] = {}
        for code in codes:
            for guess in slot.predictions[code]:
                texts.setdefault(guess.token_id, _plain(guess.token))
        spelled = list(texts.values())
        labels = {i: text if spelled.count(text) == 1 else f"{text} (id {i})" for i, text in texts.items()}
        found = {
            i: [next((g.probability for g in slot.predictions[c] if g.token_id == i), None) for c in codes]
            for i in texts
        }
        # The rows with the highest total probability over the adapters, in that order, when there are too many.
        kept = sorted(found, key=lambda i: -sum(p for p in found[i] if p is not None))[:MAX_TOKEN_ROWS]
        if len(found) > MAX_TOKEN_ROWS:
            title += f"<br><sup>the {MAX_TOKEN_ROWS} of {len(found)} tokens with the highest total probability "
            title += "(the table and the CSV have them all)</sup>"
        else:
            kept = list(texts)
        tokens = [labels[i] for i in kept]
        values = [found[i] for i in kept]
        figure = go.Figure(
            go.Heatmap(
                z=values,
                x=codes,
                y=tokens,
                colorscale="Blues",
                zmin=0,
                colorbar=dict(title="p"),
                hoverongaps=False,
                hovertemplate="%{x}: %{y} p=%{z:.4f}<extra></extra>",
            )
        )
        figure.update_yaxes(autorange="reversed", title_text="token (blank: not in that adapter's top-k)")
        return _layout(figure, title, height=max(400, 18 * len(tokens) + 140))
    rows = math.ceil(len(codes) / COLUMNS)
    columns = min(COLUMNS, len(codes))
    colours = language_colours(codes)
    highest = max((g.probability for guesses in slot.predictions.values() for g in guesses), default=1.0)
    figure = make_subplots(
        rows=rows, cols=columns, subplot_titles=codes, horizontal_spacing=0.12, vertical_spacing=0.12
    )
    for index, code in enumerate(codes):
        guesses = slot.predictions[code]
        figure.add_trace(
            go.Bar(
                x=[g.probability for g in guesses],
                y=[f"{rank}. {_plain(g.token)}" for rank, g in enumerate(guesses, start=1)],
                orientation="h",
                name=code,
                marker_color=colours[code],
                text=[f"{g.probability:.3f}" for g in guesses],
                textposition="auto",
                hovertemplate=f"{code}: %{{y}} p=%{{x:.4f}}<extra></extra>",
                showlegend=False,
            ),
            row=index // COLUMNS + 1,
            col=index % COLUMNS + 1,
        )
    figure.update_yaxes(autorange="reversed")
    # The axis fits the data (one range for all panels, so bars compare across adapters).
    figure.update_xaxes(range=[0, min(1.0, highest * 1.15)], title_text="probability")
    return _layout(figure, title, height=260 * rows + 60)


def similarity_heatmap(matrix, labels: list[str], title: str, groups: list[str] | None = None) -> go.Figure:
    """A symmetric similarity matrix, its values printed in the cells while they fit. Past 24 rows the cells shrink,
    and with groups (one name per row, for example its language) only each group's first row is labelled: every
    label is text the browser measures, and hover still names each cell."""
    # A numpy array goes to the browser as one base64 block of float64s (Plotly 6+), not as text: the same numbers,
    # and 105,000 of them (324 sentences) no longer parsed one by one.
    values = np.asarray(matrix, dtype=np.float64)
    many = len(labels) > 24
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=labels,
            y=labels,
            zmin=min(0.0, float(values.min())),
            zmax=1.0,
            colorscale="Viridis",
            # Values in the cells while they fit; past that no text array at all (hover reads z).
            text=[[f"{v:.3f}" for v in row] for row in values] if len(labels) <= 12 else None,
            texttemplate="%{text}" if len(labels) <= 12 else None,
            colorbar=dict(title="cosine"),
            hovertemplate="%{y} and %{x}: %{z:.4f}<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed")
    if many and groups:
        first = [label for index, label in enumerate(labels) if index == 0 or groups[index] != groups[index - 1]]
        names = [groups[labels.index(label)] for label in first]
        if len(first) > 2 * MAX_LINES:
            # Past 24 groups even one label per group is text the browser measures by the hundred (a third of a
            # second at 81 languages): no tick labels, hover names each cell.
            figure.update_xaxes(showticklabels=False, title_text="sentences, grouped by language (hover names them)")
            figure.update_yaxes(showticklabels=False)
        else:
            figure.update_xaxes(tickmode="array", tickvals=first, ticktext=names)
            figure.update_yaxes(tickmode="array", tickvals=first, ticktext=names)
    cell = max(3, 860 // len(labels)) if many else 28
    return _layout(figure, title, height=max(380, cell * len(labels) + 140))


def adapter_heatmap(comparison: AdapterComparison, layer: int, centred: bool = False) -> go.Figure:
    """Pooled (or centred) similarity between adapters at one layer."""
    matrix = (comparison.centred_cosine if centred else comparison.pooled_cosine)[layer]
    kind = "centred cosine" if centred else "cosine of mean-pooled states"
    return similarity_heatmap(matrix, comparison.languages, f"Layer {layer}: {kind}")


def language_layer_heatmap(
    rows: list[str], layers: list[int], values: list[list[float]], title: str, name: str, colours: str, zmin=None
) -> go.Figure:
    """Languages x layers as one heatmap: what a line per language becomes past MAX_LINES languages (one trace, no
    legend); hover gives each exact value. Rows shrink and lose their labels past MAX_LABELLED_ROWS."""
    figure = go.Figure(
        go.Heatmap(
            z=np.asarray(values, dtype=np.float64),  # one binary block, the same numbers
            x=layers,
            y=rows,
            colorscale=colours,
            zmin=zmin,
            colorbar=dict(title=name),
            hovertemplate=f"%{{y}}, layer %{{x}}: {name} %{{z:.4f}}<extra></extra>",
        )
    )
    figure.update_xaxes(title_text="layer (0 = embeddings)", dtick=1)
    many = len(rows) > MAX_LABELLED_ROWS
    figure.update_yaxes(autorange="reversed", showticklabels=not many)
    return _layout(figure, title, height=max(360, (8 if many else 16) * len(rows) + 140))


def reference_lines(comparison: AdapterComparison, centred: bool = False) -> go.Figure:
    """Each adapter's similarity to the reference adapter across layers."""
    curve = comparison.reference_curve(centred)
    kind = "centred" if centred else "raw"
    others = [(index, code) for index, code in enumerate(comparison.languages) if code != comparison.reference]
    if len(others) > MAX_LINES:
        return language_layer_heatmap(
            [code for _, code in others],
            comparison.layers,
            [[float(v) for v in curve[:, index]] for index, _ in others],
            f"Similarity to {comparison.reference} per layer ({kind}): one row per adapter",
            "similarity",
            "Viridis",
        )
    colours = language_colours(comparison.languages)
    figure = go.Figure()
    for index, code in enumerate(comparison.languages):
        if code == comparison.reference:
            continue
        figure.add_trace(
            go.Scatter(
                x=comparison.layers,
                y=[float(v) for v in curve[:, index]],
                mode="lines+markers",
                name=code,
                line=dict(color=colours[code]),
                hovertemplate=f"{code}, layer %{{x}}: %{{y:.4f}}<extra></extra>",
            )
        )
    figure.update_xaxes(title_text="layer (0 = embeddings)", dtick=1)
    figure.update_yaxes(title_text="similarity to " + comparison.reference)
    return _layout(figure, f"Similarity to {comparison.reference} per layer ({kind})")


def token_shift_heatmap(comparison: AdapterComparison, language: str, centred: bool = False) -> go.Figure:
    """Tokens x layers: 1 - cosine between this adapter's token state and the reference adapter's."""
    index = comparison.languages.index(language)
    source = comparison.token_cosine_centred if centred else comparison.token_cosine
    distance = [
        [1.0 - float(source[layer, index, t]) for layer in comparison.layers] for t in range(len(comparison.tokens))
    ]
    labels = [f"{t + 1}. {_plain(token)}" for t, token in enumerate(comparison.tokens)]
    figure = go.Figure(
        go.Heatmap(
            z=distance,
            x=comparison.layers,
            y=labels,
            colorscale="Magma",
            reversescale=True,
            zmin=0,
            colorbar=dict(title="1 - cos"),
        )
    )
    figure.update_xaxes(title_text="layer", dtick=1)
    figure.update_yaxes(autorange="reversed")
    kind = "centred" if centred else "raw"
    title = f"How far {language} moves each token from {comparison.reference} ({kind})"
    return _layout(figure, title, height=max(360, 24 * len(labels) + 120))


def sentence_heatmap(comparison: SentenceComparison, layer: int, centred: bool = False) -> go.Figure:
    """Similarity of sentences (each through its own adapter) at one layer."""
    matrix = (comparison.centred_cosine if centred else comparison.pooled_cosine)[layer]
    kind = "centred cosine" if centred else "cosine"
    groups = [code for code, _ in comparison.pairs]
    return similarity_heatmap(matrix, comparison.labels, f"Layer {layer}: sentence {kind}", groups=groups)


def cka_grid(comparison: SentenceComparison, layer: int) -> go.Figure:
    """The compact view past MAX_LABELLED_ROWS language pairs (3,240 at 81 languages, whose pairs x layers chart was
    6,600 px tall and held the page for 0.4 s): language x language at one layer, CKA on the left, the translation
    pairs' cosine gap on the right; each cell an exact value (hover), the diagonal blank. The CSV has every layer
    with the p-values and null bands."""
    codes = list(dict.fromkeys(code for s in comparison.scores for code in (s.language_a, s.language_b)))
    at = {code: index for index, code in enumerate(codes)}
    panels = {"CKA": lambda s: s.cka, "gap": lambda s: s.matched_cosine - s.shuffled_cosine}
    figure = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["linear CKA", "cosine gap: translations minus re-pairings"],
        horizontal_spacing=0.2,
        shared_yaxes=True,
    )
    for column, (short, value) in enumerate(panels.items(), start=1):
        grid = np.full((len(codes), len(codes)), np.nan)
        for score in comparison.scores:
            if score.layer == layer:
                a, b = at[score.language_a], at[score.language_b]
                grid[a, b] = grid[b, a] = value(score)
        figure.add_trace(
            go.Heatmap(
                z=grid,
                x=codes,
                y=codes,
                colorscale="RdBu",
                zmid=0,
                hoverongaps=False,
                colorbar=dict(title=short, x=0.42 if column == 1 else 1.01, len=0.9, thickness=12),
                hovertemplate=f"%{{y}}-%{{x}}, layer {layer}: {short} %{{z:.4f}}<extra></extra>",
            ),
            1,
            column,
        )
    labelled = len(codes) <= MAX_LINES * 2
    figure.update_xaxes(showticklabels=labelled)
    figure.update_yaxes(autorange="reversed", showticklabels=labelled)
    figure.update_yaxes(showticklabels=False, row=1, col=2)
    return _layout(
        figure,
        f"Layer {layer}, {len(codes)} languages: each cell a language pair (hover); n = {comparison.parallel_size} "
        "sentences per language; blue above 0, red below; every layer, p-values and null bands: in the CSV",
        height=max(420, 8 * len(codes) + 160),
    )


def cka_heatmap(comparison: SentenceComparison) -> go.Figure:
    """Language pairs x layers, two panels: linear CKA of the translation sets, and the translation-pair cosine
    above its permutation null's mean. One row per pair stays readable at 12+ languages (one line per pair was a
    tangle); a * marks p < ALPHA; hover gives every number with the null's 95 % band."""
    pairs = list(dict.fromkeys((s.language_a, s.language_b) for s in comparison.scores))
    layers = sorted({s.layer for s in comparison.scores})
    by_key = {(s.language_a, s.language_b, s.layer): s for s in comparison.scores}
    names = [f"{a}-{b}" for a, b in pairs]

    def grid(value):
        def cell(score):
            number = value(score) if score is not None else None
            return None if number is None or math.isnan(number) else number

        return [[cell(by_key.get((a, b, layer))) for layer in layers] for a, b in pairs]

    panels = [
        ("linear CKA", "CKA", lambda s: s.cka, "cka_p_value", "cka_null_low", "cka_null_high"),
        (
            "cosine gap: translations minus re-pairings",
            "gap",
            lambda s: s.matched_cosine - s.shuffled_cosine,
            "cosine_p_value",
            "cosine_null_low",
            "cosine_null_high",
        ),
    ]
    crowded = len(pairs) > MAX_LABELLED_ROWS
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=[panel[0] for panel in panels], horizontal_spacing=0.2, shared_yaxes=True
    )
    for column, (_, short, value, p_value, low, high) in enumerate(panels, start=1):
        p_values = grid(lambda s, key=p_value: getattr(s, key))
        marks = [["*" if p is not None and p < ALPHA else "" for p in row] for row in p_values]
        detail = grid(lambda s, key=p_value: getattr(s, key))
        lows, highs = grid(lambda s, key=low: getattr(s, key)), grid(lambda s, key=high: getattr(s, key))
        customdata = [
            [[p, lo, hi] for p, lo, hi in zip(row_p, row_low, row_high)]
            for row_p, row_low, row_high in zip(detail, lows, highs)
        ]
        figure.add_trace(
            go.Heatmap(
                z=np.array(grid(value), dtype=np.float64),  # gaps as NaN; sent as one binary block
                x=layers,
                y=names,
                # No text array at all when it would not be printed: thousands of strings the browser parses.
                text=marks if len(pairs) * len(layers) <= MAX_CELL_LABELS else None,
                texttemplate="%{text}" if len(pairs) * len(layers) <= MAX_CELL_LABELS else None,
                # Past MAX_LABELLED_ROWS pairs the p-values and null bands stay in the CSV: three more numbers per
                # cell, 250,000 at 81 languages, held the page for 0.4 s.
                customdata=None if crowded else customdata,
                colorscale="RdBu",
                zmid=0,
                hoverongaps=False,
                colorbar=dict(title=short, x=0.42 if column == 1 else 1.01, len=0.9, thickness=12),
                hovertemplate=f"%{{y}}, layer %{{x}}: {short} %{{z:.4f}}<extra></extra>"
                if crowded
                else f"%{{y}}, layer %{{x}}: {short} %{{z:.4f}}<br>p = %{{customdata[0]:.3f}}; "
                "null band %{customdata[1]:.3f} to %{customdata[2]:.3f}<extra></extra>",
            ),
            1,
            column,
        )
    figure.update_xaxes(title_text="layer", dtick=1)
    many = len(pairs) > MAX_LABELLED_ROWS
    figure.update_yaxes(autorange="reversed", showticklabels=not many)
    figure.update_yaxes(showticklabels=False, row=1, col=2)  # the same rows as on the left
    size = comparison.parallel_size
    marked = "" if len(pairs) * len(layers) > MAX_CELL_LABELS else f"; * = p < {ALPHA} against re-pairings"
    if crowded:
        marked += "; p-values and null bands: in the CSV"
    return _layout(
        figure,
        f"n = {size} sentences per language; blue above 0, red below{marked}",
        height=max(320, (max(2, 1400 // len(pairs)) if many else 22) * len(pairs) + 160),
    )


# ----- classification and the transfer lab ---------------------------------------------------------


def _plain(text: str) -> str:
    """Labels come from users' files; plotly renders a subset of HTML in names, so escape it."""
    return html.escape(str(text), quote=False)


def classification_bars(result: Classification) -> go.Figure:
    """Label probabilities per adapter: a group of bars per language, one colour per label."""
    figure = go.Figure()
    for label in result.labels:
        values = [result.probabilities[code][label] for code in result.languages]
        figure.add_trace(
            go.Bar(
                x=result.languages,
                y=values,
                name=_plain(label),
                text=[f"{v:.2f}" for v in values],
                textposition="auto",
                hovertemplate=f"%{{x}}: {_plain(label)} p=%{{y:.4f}}<extra></extra>",
            )
        )
    figure.update_layout(barmode="group", legend=dict(title_text="label", orientation="h", y=-0.25))
    figure.update_yaxes(range=[0, 1], title_text="probability")
    figure.update_xaxes(title_text="language adapter")
    return _layout(figure, "Label probabilities per adapter")


def transfer_bars(result: TransferResult) -> go.Figure:
    """Accuracy per target language: its own adapter vs the source language's adapter, with the majority-label floor."""
    codes = result.languages
    labelled = len(codes) <= 4  # wider bars have room for their value
    figure = go.Figure()
    for name, values, intervals in (
        (
            "target language's adapter (X-MOD)",
            [row.target_adapter_accuracy for row in result.rows],
            [row.target_adapter_ci for row in result.rows],
        ),
        (
            f"source adapter {result.source_language} (baseline)",
            [row.source_adapter_accuracy for row in result.rows],
            [row.source_adapter_ci for row in result.rows],
        ),
    ):
        figure.add_trace(
            go.Bar(
                x=codes,
                y=values,
                name=name,
                text=[f"{v:.0%}" for v in values] if labelled else None,
                textposition="inside",
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[high - value for value, (_, high) in zip(values, intervals)],
                    arrayminus=[value - low for value, (low, _) in zip(values, intervals)],
                    color="#777777",  # seen on a light and on a dark page
                    thickness=1.5,
                ),
                customdata=intervals,
                hovertemplate="%{x}: %{y:.1%} (95 % interval %{customdata[0]:.1%} to %{customdata[1]:.1%})"
                "<extra></extra>",
            )
        )
    figure.add_trace(
        go.Scatter(
            x=codes,
            y=[row.majority_share for row in result.rows],
            mode="markers",
            name="always the majority label",
            marker=dict(symbol="line-ew-open", size=30, color="#777777", line=dict(width=3, color="#777777")),
        )
    )
    figure.update_layout(barmode="group", legend=dict(orientation="h", y=-0.25))
    figure.update_yaxes(range=[0, 1.05], title_text="accuracy", tickformat=".0%")
    figure.update_xaxes(title_text="target language")
    gaps = ", ".join(f"{row.language} p = {row.gap_p_value:.2f}" for row in result.target_rows)
    return _layout(
        figure,
        f"Zero-shot transfer from {result.source_language}: accuracy per language with 95 % intervals"
        + (f"<br><sup>gap, exact McNemar: {gaps}</sup>" if gaps else ""),
    )


def loss_curve(training: ProbeTraining) -> go.Figure:
    """Training loss per step."""
    figure = go.Figure(
        go.Scatter(x=list(range(1, len(training.losses) + 1)), y=training.losses, mode="lines+markers", name="loss")
    )
    figure.update_xaxes(title_text="step")
    figure.update_yaxes(title_text="cross-entropy", rangemode="tozero")
    kind = "probe" if training.head.encoder == "frozen" else "fine-tuning"
    return _layout(
        figure, f"Training loss ({kind}, {training.examples} examples, {training.seconds:.1f} s)", height=320
    )


# ----- one colour per language; the logit lens, language scores, mixing, maps ---------------------------

# Okabe & Ito's colour-blind-safe eight, then Paul Tol's muted scheme: the one place to change the palette.
PALETTE = [
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#F0E442",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
    "#000000",
    "#332288",
    "#88CCEE",
    "#44AA99",
    "#117733",
    "#999933",
    "#DDCC77",
    "#CC6677",
    "#882255",
    "#AA4499",
]


def language_colours(codes: list[str]) -> dict[str, str]:
    """A colour per language code: the same language gets the same colour in every chart (its place in
    xmod-base's language order picks it), unless two languages of one chart would share one."""
    order = [*LANGUAGE_NAMES, *EXTRA_NAMES]
    colours: dict[str, str] = {}
    for code in codes:
        start = order.index(code) if code in order else len(order) + len(colours)
        taken = set(colours.values())
        choices = [PALETTE[(start + step) % len(PALETTE)] for step in range(len(PALETTE))]
        colours[code] = next((c for c in choices if c not in taken), choices[0])
    return colours


def lens_grid(lens: LogitLens, mask_number: int = 1) -> go.Figure:
    """Layers x adapters: each cell the top-1 token there, coloured by whether it is already that adapter's final
    answer."""
    mask = lens.masks[mask_number - 1]
    codes = lens.languages
    agree = [[1 if mask.agrees_with_final(layer)[code] else 0 for code in codes] for layer in lens.layers]
    tops = [mask.top_tokens(layer) for layer in lens.layers]
    text = [[_plain(tops[layer][code].token) for code in codes] for layer in lens.layers]
    hover = [
        [
            f"{code}, layer {layer}<br>top-1: {_plain(tops[layer][code].token)} ({tops[layer][code].probability:.3f})"
            f"<br>final answer {_plain(mask.final[code].token)}: {mask.final_probability[code][layer]:.3f}"
            for code in codes
        ]
        for layer in lens.layers
    ]
    figure = go.Figure(
        go.Heatmap(
            z=agree,
            x=codes,
            y=[f"layer {layer}" for layer in lens.layers],
            # No text array when it is not printed (hover has its own): a thousand strings fewer at 81 adapters.
            text=text if len(codes) * len(lens.layers) <= MAX_CELL_LABELS else None,
            texttemplate="%{text}" if len(codes) * len(lens.layers) <= MAX_CELL_LABELS else None,
            hovertext=hover,
            hoverinfo="text",
            zmin=0,
            zmax=1,
            colorscale=[[0, "#DDDDDD"], [0.5, "#DDDDDD"], [0.5, "#44AA99"], [1, "#44AA99"]],
            showscale=False,
            xgap=2,
            ygap=2,
        )
    )
    divergence = mask.divergence_layer()
    where = "never" if divergence is None else f"first at layer {divergence}"
    title = f"Mask {mask_number}: top-1 per layer (green = already the adapter's final answer); adapters differ {where}"
    return _layout(figure, title, height=max(320, 42 * len(lens.layers) + 140))


def lens_final_probability(lens: LogitLens, mask_number: int = 1) -> go.Figure:
    """Per adapter: the probability of its own final answer at every layer."""
    mask = lens.masks[mask_number - 1]
    if len(lens.languages) > MAX_LINES:
        return language_layer_heatmap(
            [f"{code}: {_plain(mask.final[code].token)}" for code in lens.languages],
            lens.layers,
            [list(mask.final_probability[code]) for code in lens.languages],
            f"Mask {mask_number}: each adapter's final answer (row), its probability layer by layer",
            "p",
            "Blues",
            zmin=0,
        )
    colours = language_colours(lens.languages)
    figure = go.Figure()
    for code in lens.languages:
        figure.add_trace(
            go.Scatter(
                x=lens.layers,
                y=mask.final_probability[code],
                mode="lines+markers",
                name=f"{code}: {_plain(mask.final[code].token)}",
                line=dict(color=colours[code]),
            )
        )
    figure.update_xaxes(title_text="layer (0 = embeddings)", dtick=1)
    figure.update_yaxes(title_text="probability of the final answer", rangemode="tozero")
    return _layout(figure, f"Mask {mask_number}: each adapter's final answer, layer by layer", height=380)


def language_score_bars(scores: LanguageScores) -> go.Figure:
    """Pseudo-log-likelihood per token of each adapter, best at the top."""
    colours = language_colours(scores.languages)
    figure = go.Figure(
        go.Bar(
            x=[score.per_token for score in scores.scores],
            y=[score.language for score in scores.scores],
            orientation="h",
            marker=dict(color=[colours[code] for code in scores.languages]),
            text=[f"{score.per_token:.2f}" for score in scores.scores],
            textposition="auto",
            hovertemplate="%{y}: %{x:.3f} nats per token<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed", title_text="language adapter")
    figure.update_xaxes(title_text="pseudo-log-likelihood per token (nats; closer to 0 = fits better)")
    title = f"Which adapter fits: {scores.best} ({len(scores.tokens)} tokens scored)"
    return _layout(figure, title, height=max(320, 26 * len(scores.scores) + 140))


def mix_lines(mix: AdapterMix, mask_number: int = 1, alpha: float | None = None) -> go.Figure:
    """Probability of every token that is top-1 at some alpha, across alpha; a line marks the chosen alpha."""
    mask = mix.masks[mask_number - 1]
    figure = go.Figure()
    for index, token in enumerate(mask.tracked):
        figure.add_trace(
            go.Scatter(
                x=mix.alphas,
                y=token.probabilities,
                mode="lines+markers",
                name=_plain(token.token),
                line=dict(color=PALETTE[index % len(PALETTE)]),
            )
        )
    if alpha is not None:
        figure.add_vline(x=mix.alphas[mix.nearest(alpha)], line=dict(dash="dot", color="grey"))
    figure.update_xaxes(title_text=f"alpha (0 = {mix.language_a} only, 1 = {mix.language_b} only)", range=[-0.02, 1.02])
    figure.update_yaxes(title_text="probability", rangemode="tozero")
    return _layout(figure, f"Mask {mask_number}: mixing {mix.language_a} into {mix.language_b}", height=400)


def projection_scatter(projection: Projection, layer: int) -> go.Figure:
    """The points of one layer, a colour per language, the text under the pointer."""
    index = projection.at(layer)
    points = projection.coordinates[index]
    colours = language_colours(list(dict.fromkeys(projection.languages)))
    figure = go.Figure()
    if len(colours) > MAX_LINES:
        # One trace, each point in its language's colour; no legend (hover names the language).
        figure.add_trace(
            go.Scatter(
                x=[float(v) for v in points[:, 0]],
                y=[float(v) for v in points[:, 1]],
                mode="markers",
                marker=dict(
                    color=[colours[c] for c in projection.languages], size=9, line=dict(width=1, color="white")
                ),
                hovertext=[f"{c}: {_plain(_shorten(t))}" for c, t in zip(projection.languages, projection.texts)],
                hoverinfo="text",
                showlegend=False,
            )
        )
    for code, colour in ({} if len(colours) > MAX_LINES else colours).items():
        members = [i for i, c in enumerate(projection.languages) if c == code]
        figure.add_trace(
            go.Scatter(
                x=[float(points[i, 0]) for i in members],
                y=[float(points[i, 1]) for i in members],
                mode="markers",
                name=code,
                marker=dict(color=colour, size=11, line=dict(width=1, color="white")),
                hovertext=[f"{code}: {_plain(_shorten(projection.texts[i]))}" for i in members],
                hoverinfo="text",
            )
        )
    if projection.explained_variance is not None:
        share = projection.explained_variance[index]
        figure.update_xaxes(title_text=f"PC 1 ({float(share[0]):.0%} of the variance)")
        figure.update_yaxes(title_text=f"PC 2 ({float(share[1]):.0%} of the variance)")
    else:
        figure.update_xaxes(title_text="UMAP 1")
        figure.update_yaxes(title_text="UMAP 2")
    what = "sentences, each through its own adapter" if projection.kind == "sentences" else "one text, many adapters"
    return _layout(figure, f"Layer {layer}: {what} ({projection.method.upper()})", height=520)


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
