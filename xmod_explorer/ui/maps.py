"""Map tab: mean-pooled states of many sentences (or of one text through many adapters) placed in 2-D, per layer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import gradio as gr

from xmod_explorer import plots
from xmod_explorer.engine import Explorer
from xmod_explorer.projection import Projection, umap_available
from xmod_explorer.settings import Settings
from xmod_explorer.ui import links
from xmod_explorer.ui.common import (
    ModelHolder,
    csv_file,
    escape,
    gpu,
    language_choices,
    language_dropdown,
    pick_languages,
    summarised,
    text_box,
    ui_errors,
)
from xmod_explorer.ui.sentences import default_pairs

SENTENCES = "Sentences, each through its own language's adapter"
ADAPTERS = "One text through many adapters"
MODES = {"sentences": SENTENCES, "adapters": ADAPTERS}
POINTS_LABEL = "Points at this layer"
PREFERRED = ["en_XX", "de_DE", "fr_XX", "ru_RU", "es_XX", "ja_XX", "zh_CN", "ko_KR"]
HOW_TO_READ = (
    "**How to read it.** Each point is one sentence's hidden state at the chosen layer, averaged over its tokens, "
    "placed in 2-D; colours are languages (the same colour for a language in every chart here), and the pointer "
    "shows the sentence. PCA (the default) keeps the two directions along which the points differ most; the axis "
    "titles say how much of all the differences those two directions hold, so a small share means the picture "
    "leaves most of the structure out. Sentences that cluster by language show adapters (or scripts) shaping the "
    "space; translations that cluster together show shared meaning. With one text through many adapters, the "
    "points are the adapters themselves: at layer 0 (before any adapter) they coincide. What it does not show: "
    "distances in 2-D are a shadow of distances in hundreds of dimensions, so two points close here may be far "
    "apart there; UMAP keeps neighbourhoods but its axes and distances between clusters have no meaning."
)


@dataclass
class MapTab:
    mode: gr.Radio
    table: gr.Dataframe
    text: gr.Textbox
    languages: gr.Dropdown
    method: gr.Radio
    run: gr.Button
    layer: gr.Slider
    chart: gr.Plot
    notes: gr.Markdown
    points: gr.Dataframe
    download: gr.DownloadButton
    result: gr.State
    copy_link: gr.Button | None = None
    link_box: gr.Textbox | None = None

    def model_fields(self) -> list:
        """The components that change when the Model tab loads another model."""
        return [self.table, self.languages, self.layer]

    def model_updates(self, explorer: Explorer) -> dict:
        return {
            self.table: default_pairs(explorer.languages, count=6),
            self.languages: gr.Dropdown(
                choices=language_choices(explorer), value=pick_languages(explorer, PREFERRED, count=8), multiselect=True
            ),
            self.layer: gr.Slider(maximum=explorer.info().layers, value=explorer.info().layers),
        }

    def link_fields(self) -> dict:
        """The inputs a deep link may set, by parameter name (Copy link writes them back)."""
        return {
            "mode": self.mode,
            "rows": self.table,
            "text": self.text,
            "languages": self.languages,
            "method": self.method,
            "layer": self.layer,
        }

    def link_run(self) -> str:
        return self.run.elem_id

    def from_link(self, params: Mapping[str, str], explorer: Explorer, settings: Settings) -> dict:
        """?tab=map&mode=adapters&text=...&languages=en_XX,de_DE,fr_XX&layer=4&method=pca, or
        ?tab=map&mode=sentences&rows=... (lines of code TAB sentence); a text without a mode maps adapters."""
        values = {
            self.mode: links.choice(params, "mode", list(MODES)),
            self.table: links.rows(params, "rows", explorer, settings),
            self.text: links.text(params, "text", settings),
            self.languages: links.languages(params, "languages", explorer, settings),
            self.layer: links.number(params, "layer", 0, explorer.info().layers),
            self.method: links.choice(params, "method", method_choices()),
        }
        if values[self.mode] is None and values[self.text] is not None:
            values[self.mode] = "adapters"
        return links.present(values)


def method_choices() -> list[str]:
    return ["pca", "umap"] if umap_available() else ["pca"]


def notes_markdown(projection: Projection, layer: int) -> str:
    lines = []
    if projection.explained_variance is not None:
        share = projection.explained_variance[projection.at(layer)]
        lines.append(
            f"Layer {layer}: the two axes hold {float(share[0]):.0%} and {float(share[1]):.0%} of the variance "
            f"({float(share.sum()):.0%} together) of {len(projection.languages)} points."
        )
    lines += [f"Note: {escape(note)}" for note in projection.notes]
    return "\n\n".join(lines)


def build_map_tab(holder: ModelHolder, settings: Settings) -> MapTab:
    explorer = holder.explorer
    layers = explorer.info().layers
    gr.Markdown(HOW_TO_READ)
    mode = gr.Radio(
        [(label, key) for key, label in MODES.items()], value="sentences", label="What to map", elem_id="map-mode"
    )
    table = gr.Dataframe(
        value=default_pairs(explorer.languages, count=6),
        headers=["language", "text"],
        datatype=["str", "str"],
        interactive=True,
        label="Sentences: language code and text (edit, add or delete rows)",
        max_height=320,
        elem_id="map-table",
    )
    with gr.Row():
        text = text_box(
            settings,
            "Every language adapter sees the same sentence.",
            label="Text (for one text through many adapters)",
            elem_id="map-text",
            scale=3,
        )
        with gr.Column(scale=2):
            languages = language_dropdown(
                explorer,
                settings,
                pick_languages(explorer, PREFERRED, count=8),
                label="Adapters (for one text through many adapters)",
                elem_id="map-languages",
            )
    method = gr.Radio(method_choices(), value="pca", label="Projection (UMAP needs umap-learn)", elem_id="map-method")
    run = gr.Button("Draw the map", variant="primary", elem_id="map-run")
    copy_link, link_box = links.link_row("map")
    layer = gr.Slider(0, layers, value=layers, step=1, label="Layer (0 = embeddings)", elem_id="map-layer")
    chart = gr.Plot(label="Map", elem_id="map-chart")
    notes = gr.Markdown(elem_id="map-notes")
    points = gr.Dataframe(label=POINTS_LABEL, interactive=False, max_height=300)
    download = gr.DownloadButton("Download CSV (every layer)", visible=False, size="sm")
    result = gr.State(None)
    tab = MapTab(
        mode,
        table,
        text,
        languages,
        method,
        run,
        layer,
        chart,
        notes,
        points,
        download,
        result,
        copy_link=copy_link,
        link_box=link_box,
    )

    def view(projection: Projection, at_layer) -> dict:
        at_layer = min(max(int(at_layer), projection.layers[0]), projection.layers[-1])
        frame = projection.to_frame()
        return {
            tab.chart: plots.projection_scatter(projection, at_layer),
            tab.notes: notes_markdown(projection, at_layer),
            tab.points: frame[frame.layer == at_layer].drop(columns=["layer"]).round(4),
        }

    @holder.serving.heavy
    @gpu
    def draw(what, rows, sentence, codes, how, at_layer):
        if what == "adapters":
            projection = holder.explorer.project(sentence, method=how, languages=list(codes or []))
        else:
            projection = holder.explorer.project(rows, method=how)
        at_layer = min(max(int(at_layer), projection.layers[0]), projection.layers[-1])
        return {
            tab.chart: plots.projection_scatter(projection, at_layer),
            tab.notes: notes_markdown(projection, at_layer),
            tab.layer: gr.Slider(maximum=projection.layers[-1]),
            tab.download: gr.DownloadButton(value=csv_file(projection.to_frame(), "map"), visible=True),
            tab.result: projection,
        }

    @ui_errors
    def redraw(projection, at_layer):
        if projection is None:
            return gr.skip()
        return view(projection, at_layer)

    @ui_errors
    def draw_points(projection, at_layer):
        if projection is None:
            return gr.skip()
        at_layer = min(max(int(at_layer), projection.layers[0]), projection.layers[-1])
        frame = projection.to_frame()
        return summarised(frame[frame.layer == at_layer].drop(columns=["layer"]).round(4), POINTS_LABEL)

    # The points table comes in an answer of its own: the browser draws it in a task of its own (issue 16).
    run.click(
        draw,
        [mode, table, text, languages, method, layer],
        [chart, notes, layer, download, result],
        api_visibility="private",
    ).success(draw_points, [result, layer], points, api_visibility="private", show_progress="hidden")
    layer.input(redraw, [result, layer], [chart, notes, points], api_visibility="private")
    return tab
