"""Load any X-MOD checkpoint into a backend: local or hub, native or adapters format, any device.

This is the only place that reads checkpoints. Weights come from safetensors where present;
pickle files only go through ``torch.load(weights_only=True)`` (transformers and adapters both
do this), and ``trust_remote_code`` is never set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from xmod_explorer import hub
from xmod_explorer.backends import AdapterBackend, NativeBackend
from xmod_explorer.convert import ADAPTERS_DIR, MARKER, adapter_model_from_native
from xmod_explorer.errors import ExplorerError
from xmod_explorer.languages import resolve_languages

log = logging.getLogger(__name__)

BACKENDS = ("auto", "transformers", "adapters")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CLASSIFIER_ARCHITECTURES = {"XmodForSequenceClassification"}


@dataclass
class Loaded:
    """A checkpoint made ready to run: backend, tokenizer, and where it came from."""

    reference: str
    path: Path
    backend: NativeBackend | AdapterBackend
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    languages: list[str]
    checkpoint_languages: list[str]
    checkpoint_format: str
    # Languages whose adapters were trained after pre-training, with the rest frozen (config "post_hoc_languages").
    post_hoc_languages: list[str] = field(default_factory=list)


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an unavailable explicit choice is an error."""
    name = str(device).strip().lower() if device is not None else "auto"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ExplorerError(f"Unknown device {device!r}; use one of {', '.join(DEVICES)}.")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ExplorerError("device='cuda' was asked for but no CUDA GPU is visible to PyTorch; use device='cpu'.")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ExplorerError("device='mps' was asked for but Apple's MPS is not available; use device='cpu'.")
    return torch.device(name)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto' is float16 on a GPU and float32 on the CPU (half precision is slow and lossy there)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ExplorerError(f"Unsupported dtype {dtype}; use one of {', '.join(DTYPES)}.")
        return dtype
    name = (dtype or "auto").strip().lower()
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    if name not in DTYPES:
        raise ExplorerError(f"Unknown dtype {dtype!r}; use one of auto, {', '.join(DTYPES)}.")
    return DTYPES[name]


def read_config(folder: Path, reference: str) -> dict:
    """config.json of an X-MOD checkpoint, or an error saying what the folder is instead."""
    path = folder / "config.json"
    if not path.exists():
        raise ExplorerError(
            f"{reference} has no config.json, so it is not a model folder. Point to an X-MOD checkpoint."
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExplorerError(
            f"{reference}: config.json is not valid JSON ({exc}). The download may be incomplete."
        ) from exc
    if not isinstance(config, dict) or config.get("model_type") != "xmod":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise ExplorerError(
            f"{reference} is a {kind or 'non-X-MOD'} model, not X-MOD (config.json model_type must be 'xmod'). "
            "Choose an X-MOD checkpoint such as facebook/xmod-base."
        )
    if not config.get("languages"):
        raise ExplorerError(
            f"{reference}: config.json lists no languages; an X-MOD checkpoint names its adapters there."
        )
    return config


def checkpoint_format(folder: Path, config: dict) -> str:
    """'adapters' for the adapters library's layout (converted checkpoints), else 'transformers'."""
    marker = folder / MARKER
    if marker.exists():
        return json.loads(marker.read_text()).get("format", "adapters")
    if "adapters" in config or "prediction_heads" in config:
        return "adapters"
    return "transformers"


@contextlib.contextmanager
def _quiet_transformers():
    """Silence expected load warnings (the adapters of languages left out are 'unexpected keys')."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def _is_refused_pickle(exc: BaseException | None) -> bool:
    """True if exc, or an exception it wraps, is torch refusing a pickle under weights_only=True."""
    seen = 0
    while exc is not None and seen < 10:
        text = str(exc)
        if "Unpickl" in type(exc).__name__ or "weights_only" in text or "Unsupported global" in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _weights_error(reference: str, exc: Exception) -> ExplorerError:
    text = str(exc)
    if _is_refused_pickle(exc):
        return ExplorerError(
            f"{reference}: the pickle weights file holds more than tensors and was refused (it could run code). "
            "Use a safetensors checkpoint."
        )
    return ExplorerError(
        f"{reference}: the weights could not be read ({type(exc).__name__}: {text[:300]}). "
        "The file may be truncated or corrupted; download it again."
    )


def _assign_safetensors(folder: Path, cls, languages: list[str], dtype: torch.dtype):
    """The model from a single model.safetensors, or None where the general path is needed.

    Builds the modules without initialising any weight (parameters on the meta device) and assigns
    the file's tensors, which safetensors memory-maps: nothing is computed only to be overwritten,
    and the adapters of languages left out are never read. transformers' own from_pretrained does
    the same work with a per-tensor overhead that costs seconds on xmod-base's 4,000 tensors. Any
    mismatch (a missing or misshapen tensor, a sharded or pickle checkpoint) returns None, and the
    caller loads through from_pretrained, which reports it.
    """
    from safetensors.torch import load_file
    from transformers import XmodConfig
    from transformers.integrations.accelerate import init_empty_weights
    from transformers.modeling_utils import no_init_weights

    weights = folder / "model.safetensors"
    if not weights.is_file():
        return None
    try:
        config = XmodConfig.from_pretrained(str(folder), languages=languages, default_language=None)
        with no_init_weights(), init_empty_weights(include_buffers=False):
            model = cls(config)
        modules = dict(model.named_modules())
        for key, tensor in load_file(str(weights)).items():
            owner, _, attribute = key.rpartition(".")
            # A bare encoder's checkpoint names its tensors without the "roberta." prefix.
            module = modules.get(owner)
            if module is None:
                module = modules.get(f"{model.base_model_prefix}.{owner}".rstrip("."))
            current = None if module is None else module._parameters.get(attribute)
            if current is None:
                continue  # adapters of languages left out, buffers, other heads' weights
            if tensor.shape != current.shape:
                return None
            tensor = tensor if tensor.dtype == dtype else tensor.to(dtype)
            module._parameters[attribute] = torch.nn.Parameter(tensor, requires_grad=False)
        model.tie_weights()
    except Exception:  # unreadable or unexpected: the general path gives the precise message
        return None
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        return None  # a weight the file lacks (an untied head, say): from_pretrained handles it
    return model


def _load_native(folder: Path, reference: str, config: dict, languages: list[str], dtype: torch.dtype):
    from transformers import XmodForMaskedLM, XmodForSequenceClassification

    architectures = config.get("architectures") or []
    cls = XmodForSequenceClassification if CLASSIFIER_ARCHITECTURES & set(architectures) else XmodForMaskedLM
    fast = _assign_safetensors(folder, cls, languages, dtype)
    if fast is not None:
        return fast, cls is XmodForMaskedLM
    try:
        with _quiet_transformers():
            model, info = cls.from_pretrained(
                str(folder),
                languages=languages,
                default_language=None,
                dtype=dtype,
                output_loading_info=True,
                use_safetensors=None,
            )
    except ExplorerError:
        raise
    except OSError as exc:
        if "no file named" in str(exc).lower() or "does not appear to have" in str(exc).lower():
            raise ExplorerError(
                f"{reference} has a config.json but no weights file (model.safetensors or pytorch_model.bin)."
            ) from exc
        raise _weights_error(reference, exc) from exc
    except Exception as exc:
        raise _weights_error(reference, exc) from exc
    missing = [key for key in info["missing_keys"] if not key.startswith(("lm_head.", "classifier."))]
    if missing:
        raise ExplorerError(
            f"{reference}: the weights do not match its config ({len(missing)} missing, e.g. {missing[:3]}). "
            "The checkpoint may be incomplete."
        )
    if isinstance(model, XmodForSequenceClassification) and any(
        k.startswith("classifier.") for k in info["missing_keys"]
    ):
        raise ExplorerError(
            f"{reference}: config.json names a sequence classifier, but the weights have no classifier.* tensors, "
            "so its outputs would be random. Use a fine-tuned classification checkpoint."
        )
    has_mlm = isinstance(model, XmodForMaskedLM) and not any(key.startswith("lm_head.") for key in info["missing_keys"])
    return model, has_mlm


def _load_adapter_format(folder: Path, reference: str, dtype: torch.dtype):
    from adapters import AutoAdapterModel

    try:
        with _quiet_transformers():
            model = AutoAdapterModel.from_pretrained(str(folder), dtype=dtype)
    except Exception as exc:
        raise _weights_error(reference, exc) from exc
    return model


def _mlm_head_name(model) -> str | None:
    for name, head in model.heads.items():
        if head.config.get("head_type") == "masked_lm":
            return name
    return None


def _classification_head_name(model) -> str | None:
    for name, head in model.heads.items():
        if head.config.get("head_type") == "classification":
            return name
    return None


def _task_adapter(model, all_codes: list[str], reference: str) -> str | None:
    """The one adapter that is not a language adapter (a task adapter), if the checkpoint has one."""
    tasks = [name for name in model.adapters_config.adapters if name not in all_codes]
    if len(tasks) > 1:
        raise ExplorerError(
            f"{reference} holds several non-language adapters ({', '.join(tasks)}); X-MOD Explorer stacks at most "
            "one task adapter on the language adapter. Save the model with only the one you want."
        )
    return tasks[0] if tasks else None


def _adapter_source(folder: Path, reference: str, from_hub: bool):
    """Where each language's adapter lives: OUT/adapters/<code> locally, <repo>-<code> on the hub."""

    def locate(code: str) -> Path:
        local = folder / ADAPTERS_DIR / code
        if (local / "adapter_config.json").exists():
            return local
        if from_hub:
            return hub.fetch(f"{reference}-{code}", adapter=True).path
        raise ExplorerError(
            f"No adapter for {code} in {folder / ADAPTERS_DIR}. Re-run the converter, or load with languages=[...] "
            "limited to the adapters present."
        )

    return locate


def load_backend(
    reference: str,
    *,
    backend: str = "auto",
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    languages: list[str] | str | None = None,
) -> Loaded:
    """Resolve, read and place a checkpoint; see Explorer.from_pretrained for the arguments."""
    if backend not in BACKENDS:
        raise ExplorerError(f"Unknown backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    started = time.perf_counter()
    local = hub.fetch(reference)
    config = read_config(local.path, reference)
    fmt = checkpoint_format(local.path, config)
    all_codes = [str(code) for code in config["languages"]]
    codes = all_codes
    if languages not in (None, "", []):
        chosen_codes = resolve_languages(languages, all_codes)
        codes = [code for code in all_codes if code in chosen_codes]  # keep the checkpoint's order
    chosen = fmt if backend == "auto" else backend
    log.info("loading %s (%s format) with the %s backend on %s in %s", reference, fmt, chosen, target, torch_dtype)

    if chosen == "transformers":
        if fmt == "adapters":
            raise ExplorerError(
                f"{reference} is in the adapters library's format; load it with backend='adapters' (or 'auto')."
            )
        model, has_mlm = _load_native(local.path, reference, config, codes, torch_dtype)
        if target.type != "cpu":
            model.to(target)
        model.eval()
        runner = NativeBackend(model, codes)
        runner.has_mlm = has_mlm
    else:
        if fmt == "transformers":
            native, has_mlm = _load_native(local.path, reference, config, codes, torch.float32)
            model = adapter_model_from_native(native, codes)
            del native
            mlm_head = _mlm_head_name(model) if has_mlm else None
            task_adapter = None
        else:
            model = _load_adapter_format(local.path, reference, torch_dtype)
            for code in list(model.adapters_config.adapters):
                if code not in codes and code in all_codes:  # languages left out; a task adapter stays
                    model.delete_adapter(code)
            mlm_head = _mlm_head_name(model)
            task_adapter = _task_adapter(model, all_codes, reference)
        model.to(device=target, dtype=torch_dtype).eval()
        runner = AdapterBackend(
            model,
            codes,
            _adapter_source(local.path, reference, local.from_hub),
            dtype=torch_dtype,
            mlm_head=mlm_head,
        )
        runner.has_mlm = mlm_head is not None
        runner.classifier_head = _classification_head_name(model)
        runner.task_adapter = task_adapter
        if languages not in (None, "", []):
            runner.ensure_languages(codes)
    for parameter in runner.model.parameters():
        parameter.requires_grad_(False)
    tokenizer = load_tokenizer(local.path, reference)
    log.info("loaded %s in %.1f s (%d languages)", reference, time.perf_counter() - started, len(codes))
    return Loaded(
        reference=reference,
        path=local.path,
        backend=runner,
        tokenizer=tokenizer,
        device=target,
        dtype=torch_dtype,
        languages=codes,
        checkpoint_languages=all_codes,
        checkpoint_format=fmt,
        post_hoc_languages=post_hoc_languages(config),
    )


def post_hoc_languages(config: dict) -> list[str]:
    """The config's languages marked as added after pre-training (an optional list; anything else is ignored)."""
    marked = config.get("post_hoc_languages")
    if not isinstance(marked, list):
        return []
    return [code for code in marked if isinstance(code, str) and code in config["languages"]]


def load_tokenizer(folder: Path, reference: str):
    """The checkpoint's own tokenizer; it must have a mask token."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise ExplorerError(
            f"{reference}: no usable tokenizer next to the weights ({type(exc).__name__}: {str(exc)[:200]}). "
            "Save the XLM-R tokenizer into the same folder."
        ) from exc
    if tokenizer.mask_token_id is None:
        raise ExplorerError(f"{reference}: the tokenizer has no mask token; X-MOD uses XLM-R's <mask>.")
    return tokenizer
