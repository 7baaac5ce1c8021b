"""App settings: command-line flags, each with an environment-variable twin, and input limits."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from xmod_explorer.limits import Limits

TRUE = {"1", "true", "yes", "on"}
SWITCH = {"on": True, "1": True, "true": True, "yes": True, "off": False, "0": False, "false": False, "no": False}


@dataclass(frozen=True)
class Settings:
    """Everything app.py needs to start: which model, where to serve, how open to be."""

    model: str | None = None
    backend: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    languages: list[str] | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    public: bool = False
    public_reason: str = "serving on this machine only"
    allow_finetune: bool = False
    mcp: bool = False
    memory_budget_gib: float | None = None  # None: a share of the memory free once the model is loaded
    batch: bool = False  # gather concurrent fill-mask requests into shared forward passes (off: see README)
    limits: Limits = field(default_factory=Limits.local)

    @property
    def can_load_models(self) -> bool:
        """Loading other models reads arbitrary paths and downloads; only for a local user."""
        return not self.public


# flag name -> (environment variable, help text)
FLAGS = {
    "model": (
        "XMOD_MODEL",
        "hub id, local folder, 'mini' (embedded model) or 'random'; default: facebook/xmod-base if cached or "
        "downloadable, else the embedded mini X-MOD",
    ),
    "backend": ("XMOD_BACKEND", "auto, transformers or adapters (default: auto, from the checkpoint)"),
    "device": ("XMOD_DEVICE", "auto, cpu, cuda or mps (default: auto)"),
    "dtype": (
        "XMOD_DTYPE",
        "auto, float32, float16, bfloat16, or int8 on the CPU (feed-forward layers in int8; see the README) "
        "(default: float16 on GPU, float32 on CPU)",
    ),
    "languages": ("XMOD_LANGUAGES", "load only these adapters, comma-separated (e.g. en_XX,de_DE,fr_XX)"),
    "host": ("XMOD_HOST", "address to serve on (default 127.0.0.1; 0.0.0.0 for all interfaces)"),
    "port": ("XMOD_PORT", "port to serve on (default 7860)"),
    "share": ("XMOD_SHARE", "also create a temporary public gradio.live link"),
    "public": (
        "XMOD_PUBLIC",
        "public-server mode: no model loading from the UI, tight input caps, no tracebacks (on automatically when "
        "SPACE_ID is set, and with --share or a --host other than loopback)",
    ),
    "no_public": (
        "XMOD_NO_PUBLIC",
        "stay in local mode with --share or a non-loopback --host (only behind access control of your own)",
    ),
    "memory_budget": (
        "XMOD_MEMORY_BUDGET",
        "memory in GiB that requests may use at once, all endpoints and users together (default: 75%% of what is "
        "free once the model is loaded)",
    ),
    "allow_finetune": ("XMOD_ALLOW_FINETUNE", "let the transfer lab also train a task adapter (slow without a GPU)"),
    "mcp": ("XMOD_MCP", "also serve the API endpoints as MCP tools (needs the mcp package)"),
    "batch": (
        "XMOD_BATCH",
        "off (default) or on: gather fill-mask requests that arrive together from different users into shared "
        "forward passes; each answer is the one the request gets alone",
    ),
}


BOOLEAN_FLAGS = {"share", "public", "no_public", "allow_finetune", "mcp"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def public_mode(*, public: bool, no_public: bool, space: bool, share: bool, host: str) -> tuple[bool, str]:
    """Whether the server runs in public mode, and why: on wherever strangers can reach it."""
    strangers = []
    if share:
        strangers.append("--share opens a public gradio.live link")
    if host not in LOOPBACK and not host.startswith("127."):
        strangers.append(f"--host {host} accepts connections from other machines")
    if public:
        return True, "--public given"
    if space:
        return True, "running on a Hugging Face Space (SPACE_ID is set)"
    if strangers and not no_public:
        return True, "; ".join(strangers) + " (--no-public keeps local mode)"
    if strangers:
        return False, "; ".join(strangers) + ", but --no-public keeps local mode: put access control in front"
    return False, f"serving on {host} only"


def build_parser(prog: str = "python app.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="X-MOD Explorer: a web app to see what the language adapters of an X-MOD model do. "
        "Every flag can also be set through the environment variable shown.",
    )
    for name, (variable, text) in FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if name in BOOLEAN_FLAGS:
            parser.add_argument(flag, action="store_true", default=None, help=f"{text} [{variable}=1]")
        elif name == "batch":
            parser.add_argument(flag, choices=["on", "off"], default=None, help=f"{text} [{variable}]")
        elif name == "port":
            parser.add_argument(flag, type=int, default=None, help=f"{text} [{variable}]")
        elif name == "memory_budget":
            parser.add_argument(flag, type=float, default=None, metavar="GIB", help=f"{text} [{variable}]")
        else:
            parser.add_argument(flag, default=None, help=f"{text} [{variable}]")
    return parser


def load_settings(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Flags win over environment variables, which win over defaults. argv=None reads no flags."""
    environ = dict(os.environ if environ is None else environ)
    args = build_parser().parse_args(argv or [])

    def pick(name: str):
        value = getattr(args, name)
        if value is not None:
            return value
        return environ.get(FLAGS[name][0]) or None

    def flag(name: str) -> bool:
        value = getattr(args, name)
        return bool(value) if value is not None else environ.get(FLAGS[name][0], "").strip().lower() in TRUE

    batch = (pick("batch") or "off").strip().lower()
    if batch not in SWITCH:
        raise SystemExit(f"{FLAGS['batch'][0]} must be on or off; got {batch!r}.")
    languages = pick("languages")
    port = pick("port")
    host = pick("host") or ("0.0.0.0" if environ.get("SPACE_ID") else "127.0.0.1")
    public, reason = public_mode(
        public=flag("public"),
        no_public=flag("no_public"),
        space=bool(environ.get("SPACE_ID")),
        share=flag("share"),
        host=host,
    )
    budget = pick("memory_budget")
    return Settings(
        model=pick("model"),
        backend=pick("backend") or "auto",
        device=pick("device") or "auto",
        dtype=pick("dtype") or "auto",
        languages=[code.strip() for code in languages.split(",") if code.strip()] if languages else None,
        host=host,
        port=int(port) if port else 7860,
        share=flag("share"),
        public=public,
        public_reason=reason,
        allow_finetune=flag("allow_finetune"),
        mcp=flag("mcp"),
        memory_budget_gib=float(budget) if budget else None,
        batch=SWITCH[batch],
        limits=Limits.public() if public else Limits.local(),
    )
