"""X-MOD Explorer web app. Run `python app.py --help` for the flags; `gradio app.py` and Spaces import `demo`."""

from __future__ import annotations

import sys

from xmod_explorer.ui.server import configure_logging, create_demo, launch, settings_from

configure_logging()
# Flags only when run as a script; imported (reload mode, Spaces) the environment variables decide.
settings = settings_from(sys.argv[1:] if __name__ == "__main__" else None)
demo = create_demo(settings)

if __name__ == "__main__":
    launch(demo, settings)
