"""Where transformers 4.57 and 5.x differ, answered once for the whole project.

The adapters library pins transformers 4.57, whose X-MOD loading has known security issues; the
native backend must also run on transformers 5 so that the project can move the day adapters
allows it. Every version-dependent call goes through here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import torch


def transformers_version() -> tuple[int, int]:
    """(major, minor) of the installed transformers."""
    import transformers

    major, minor = transformers.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def dtype_argument(dtype: torch.dtype) -> dict:
    """The from_pretrained keyword for the weights' dtype: `dtype` since 4.56, `torch_dtype` before."""
    return {"dtype": dtype} if transformers_version() >= (4, 56) else {"torch_dtype": dtype}


def config_from_checked(checked: Mapping, languages: Sequence[str]):
    """An XmodConfig built from an already checked config.json dict, holding only the adapters of languages.

    transformers never reads the file itself, so nothing in it that the checks did not see can act.
    """
    from transformers import XmodConfig

    values = {key: value for key, value in checked.items() if key not in ("languages", "default_language")}
    # X-MOD has only eager attention: set here, never taken from the file.
    return XmodConfig(**values, languages=list(languages), default_language=None, attn_implementation="eager")


def adapters_unavailable() -> str | None:
    """None if the adapters backend can run here, else why not, in words a user can act on."""
    import transformers

    try:
        import adapters  # noqa: F401
    except ImportError:
        return (
            "the adapters backend needs the `adapters` package, which is not installed here (adapters 1.3.0 "
            f"supports transformers 4.57 only; this environment has transformers {transformers.__version__}). "
            "Use backend='transformers' (the native X-MOD, same numbers), or install requirements.txt."
        )
    except Exception as exc:  # an installed adapters that does not fit this transformers fails on import
        return (
            f"the adapters package does not work with transformers {transformers.__version__} "
            f"({type(exc).__name__}: {str(exc)[:160]}). Use backend='transformers', or install requirements.txt."
        )
    return None


@contextlib.contextmanager
def parameters_on_meta():
    """Build modules whose parameters live on the meta device: no memory, no initialisation work.

    Buffers stay real (X-MOD's position ids are computed, not stored). Written here rather than
    taken from accelerate or transformers, whose helpers moved between versions.
    """
    original = torch.nn.Module.register_parameter

    def register(module, name, parameter):
        if parameter is not None and parameter.device.type != "meta":
            parameter = torch.nn.Parameter(parameter.to("meta"), requires_grad=parameter.requires_grad)
        original(module, name, parameter)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


def layer_output(output) -> torch.Tensor:
    """An XmodLayer's hidden states: 4.57 returns a tuple, 5.x the tensor itself."""
    return output[0] if isinstance(output, tuple) else output


def additive_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, tokens) 1/0 mask as the (batch, 1, 1, tokens) additive mask eager attention adds to its scores."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
