"""Start the web app: settings -> model -> Blocks -> launch. app.py and the `xmod-explorer` command use this."""

from __future__ import annotations

import logging
import sys

import gradio as gr

from xmod_explorer.engine import Explorer
from xmod_explorer.settings import Settings, build_parser, load_settings
from xmod_explorer.ui.layout import build_app, launch_options
from xmod_explorer.ui.model import server_paths, without_paths

log = logging.getLogger("xmod_explorer.app")


def configure_logging() -> None:
    """Our own messages at INFO, other libraries' at WARNING, with timestamps."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("xmod_explorer").setLevel(logging.INFO)


def create_demo(settings: Settings) -> gr.Blocks:
    """Load the model the settings name and build the app around it."""
    explorer = Explorer.from_pretrained(
        settings.model,
        backend=settings.backend,
        device=settings.device,
        dtype=settings.dtype,
        languages=settings.languages,
        limits=settings.limits,
    )
    if settings.public:
        # A public server's answers name the model without the folder it was read from.
        paths = server_paths(explorer.info())
        if paths:
            explorer = Explorer(
                explorer.loaded,
                reason=without_paths(explorer.reason, paths),
                random_weights=explorer.random_weights,
                limits=explorer.limits,
                name=without_paths(explorer.name, paths),
            )
    log.info("%s mode: %s", "public" if settings.public else "local", settings.public_reason)
    info = explorer.info()
    log.info(
        "serving %s: %s; %s backend on %s (%s), %d languages",
        info.model,
        info.reason,
        info.backend,
        info.device,
        info.dtype,
        len(info.languages),
    )
    return build_app(settings, explorer)


def launch(demo: gr.Blocks, settings: Settings) -> None:
    """Serve demo until interrupted (blocks)."""
    if settings.mcp:
        try:
            import mcp  # noqa: F401
        except ImportError:
            sys.exit('--mcp needs the MCP extra: pip install "gradio[mcp]==6.17.3"')
    demo.launch(**launch_options(settings, demo))


def settings_from(argv: list[str] | None, prog: str = "python app.py") -> Settings:
    """Settings from flags (argv; None reads none) and environment variables; --help prints and exits."""
    if argv and any(arg in ("-h", "--help") for arg in argv):
        build_parser(prog).parse_args(argv)
    return load_settings(argv)


def main(argv: list[str] | None = None, prog: str = "xmod-explorer") -> None:
    """Parse the app's flags (environment variables fill the rest), load the model and serve."""
    configure_logging()
    settings = settings_from(sys.argv[1:] if argv is None else argv, prog)
    launch(create_demo(settings), settings)
