"""X-MOD Explorer web app. Run `python app.py --help` for the flags; `gradio app.py` and Spaces import `demo`."""

from __future__ import annotations

import logging
import sys

from xmod_explorer.engine import Explorer
from xmod_explorer.settings import build_parser, load_settings
from xmod_explorer.ui.layout import build_app, launch_options

logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
logging.getLogger("xmod_explorer").setLevel(logging.INFO)
log = logging.getLogger("xmod_explorer.app")

# Flags only when run as a script; imported (reload mode, Spaces) the environment variables decide.
if __name__ == "__main__" and any(arg in ("-h", "--help") for arg in sys.argv[1:]):
    build_parser().parse_args(sys.argv[1:])
settings = load_settings(sys.argv[1:] if __name__ == "__main__" else None)
explorer = Explorer.from_pretrained(
    settings.model,
    backend=settings.backend,
    device=settings.device,
    dtype=settings.dtype,
    languages=settings.languages,
    limits=settings.limits,
)
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
demo = build_app(settings, explorer)

if __name__ == "__main__":
    if settings.mcp:
        try:
            import mcp  # noqa: F401
        except ImportError:
            sys.exit('--mcp needs the MCP extra: pip install "gradio[mcp]==6.17.3"')
    demo.launch(**launch_options(settings))
