"""Load any X-MOD checkpoint into a backend: local or hub, native or adapters format, any device.

This is the only place that reads checkpoints. config.json is read and checked here first
(``checks``), and transformers only ever sees a config built from the checked values, so a
refused checkpoint costs neither a weight download nor an allocation. Weights come from
safetensors where present; pickle files only go through ``torch.load(weights_only=True)``
(transformers and adapters both do this too), and ``trust_remote_code`` is never set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from xmod_explorer import compat, hub
from xmod_explorer.adapter_format import ADAPTERS_DIR, MARKER, adapter_model_from_native
from xmod_explorer.backends import AdapterBackend, NativeBackend
from xmod_explorer.checks import check_config, check_no_code, read_config, read_json
from xmod_explorer.errors import ExplorerError
from xmod_explorer.languages import resolve_languages
from xmod_explorer.quantization import INT8, quantize_int8
from xmod_explorer.tokenizers import resolve_tokenizer

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
    checkpoint_format: str
    tokenizer_name: str = "the checkpoint's own"
    tokenizer_source: str = ""
    # Languages whose adapters were trained after pre-training, with the rest frozen (config "post_hoc_languages").
    post_hoc_languages: list[str] = field(default_factory=list)
    quantization: str = ""  # "int8" when the feed-forward layers run in int8 (dtype="int8"); dtype is then float32


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
        raise ExplorerError(f"Unknown dtype {dtype!r}; use one of auto, {', '.join(DTYPES)}, or {INT8} on the CPU.")
    return DTYPES[name]


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


def _read_weights(folder: Path) -> dict[str, torch.Tensor] | None:
    """The single weights file's tensors, memory-mapped (nothing copied yet), or None where there is none.

    safetensors maps its file; a pickle goes through torch.load(weights_only=True, mmap=True), which
    refuses anything but tensors and maps the zip archive's storages instead of reading them.
    """
    safetensors_file, pickle_file = folder / "model.safetensors", folder / "pytorch_model.bin"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        return load_file(str(safetensors_file))
    if pickle_file.is_file() and zipfile.is_zipfile(pickle_file):
        state = torch.load(str(pickle_file), map_location="cpu", weights_only=True, mmap=True)
        return state if isinstance(state, dict) else None
    return None


def _assign_weights(folder: Path, cls, config, dtype: torch.dtype):
    """The model from a single weights file (safetensors or pickle), or None where the general path is needed.

    Builds the modules without initialising any weight (parameters on the meta device) and assigns
    the file's memory-mapped tensors: nothing is computed only to be overwritten, the adapters of
    languages left out are never read, and where the file's dtype is the one asked for no weight is
    copied at all, so loading needs little more memory than the model itself. transformers' own
    from_pretrained does the same work with a per-tensor overhead that costs seconds on
    xmod-base's 4,000 tensors. Any mismatch (a missing or misshapen tensor, a sharded checkpoint)
    returns None, and the caller loads through from_pretrained, which reports it. A pickle that
    holds more than tensors raises the refusal.
    """
    try:
        tensors = _read_weights(folder)
    except Exception as exc:
        if _is_refused_pickle(exc):
            raise
        return None  # unreadable: the general path gives the precise message
    if tensors is None:
        return None
    try:
        with compat.parameters_on_meta():
            model = cls(config)
        modules = dict(model.named_modules())
        for key, tensor in tensors.items():
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
    except Exception:  # unexpected: the general path gives the precise message
        return None
    finally:
        del tensors
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        return None  # a weight the file lacks (an untied head, say): from_pretrained handles it
    return model


def _load_native(folder: Path, reference: str, config: dict, languages: list[str], dtype: torch.dtype):
    from transformers import XmodForMaskedLM, XmodForSequenceClassification

    architectures = config.get("architectures") or []
    cls = XmodForSequenceClassification if CLASSIFIER_ARCHITECTURES & set(architectures) else XmodForMaskedLM
    checked = compat.config_from_checked(config, languages)
    try:
        fast = _assign_weights(folder, cls, checked, dtype)
    except Exception as exc:
        raise _weights_error(reference, exc) from exc
    if fast is not None:
        return fast, cls is XmodForMaskedLM
    try:
        with _quiet_transformers():
            model, info = cls.from_pretrained(
                str(folder),
                config=compat.config_from_checked(config, languages),
                output_loading_info=True,
                use_safetensors=None,
                **compat.dtype_argument(dtype),
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


def _load_adapter_format(folder: Path, reference: str, config: dict, dtype: torch.dtype):
    from adapters import AutoAdapterModel

    try:
        with _quiet_transformers():
            model = AutoAdapterModel.from_pretrained(
                str(folder),
                config=compat.config_from_checked(config, config["languages"]),
                **compat.dtype_argument(dtype),
            )
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
            return hub.fetch(f"{reference}-{code}", kind="adapter", before_weights=_check_adapter_config).path
        raise ExplorerError(
            f"No adapter for {code} in {folder / ADAPTERS_DIR}. Re-run the converter, or load with languages=[...] "
            "limited to the adapters present."
        )

    return locate


def _check_adapter_config(folder: Path) -> None:
    """Refuse an adapter_config.json that asks transformers or adapters for code."""
    config = read_json(folder / "adapter_config.json", folder.name)
    check_no_code(config, folder.name, "adapter_config.json")
    if isinstance(config.get("config"), dict):
        check_no_code(config["config"], folder.name, "adapter_config.json")


def _chosen_codes(all_codes: list[str], languages) -> list[str]:
    if languages in (None, "", []):
        return all_codes
    chosen = resolve_languages(languages, all_codes)
    return [code for code in all_codes if code in chosen]  # keep the checkpoint's order


def load_backend(
    reference: str,
    *,
    backend: str = "auto",
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    languages: list[str] | str | None = None,
    progress: hub.ProgressCallback | None = None,
) -> Loaded:
    """Resolve, check, read and place a checkpoint; see Explorer.from_pretrained for the arguments.

    progress receives each file's download progress when files come from the hub.
    """
    if backend not in BACKENDS:
        raise ExplorerError(f"Unknown backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    target = resolve_device(device)
    int8 = isinstance(dtype, str) and dtype.strip().lower() == INT8
    if int8 and target.type != "cpu":
        raise ExplorerError(
            f"dtype int8 runs on the CPU only (torch's dynamic quantisation); on {target.type} use float16 or "
            "bfloat16, or choose device cpu."
        )
    if int8 and backend == "adapters":
        raise ExplorerError("dtype int8 works with the transformers backend only; use backend auto or transformers.")
    torch_dtype = torch.float32 if int8 else resolve_dtype(dtype, target)
    dtype_name = str(torch_dtype).replace("torch.", "")
    if backend == "adapters" and (why := compat.adapters_unavailable()):
        raise ExplorerError(f"{reference}: {why}")
    started = time.perf_counter()

    def check(folder: Path) -> dict:
        config = read_config(folder, reference)  # the model_type, code and size checks, all codes
        check_config(config, reference, languages=_chosen_codes(list(config["languages"]), languages), dtype=dtype_name)
        return config

    local = hub.fetch(reference, before_weights=check, progress=progress)
    config = check(local.path)
    fmt = checkpoint_format(local.path, config)
    all_codes = [str(code) for code in config["languages"]]
    codes = _chosen_codes(all_codes, languages)
    chosen = fmt if backend == "auto" else backend
    if chosen == "adapters" and (why := compat.adapters_unavailable()):
        raise ExplorerError(f"{reference} is in the adapters library's format, but {why}")
    if not hub.has_weights(local.path):
        raise ExplorerError(
            f"{reference} has a config.json but no weights file (model.safetensors or pytorch_model.bin)."
        )
    # The tokenizer before the weights: a checkpoint that cannot be tokenized fails in seconds, not after a load.
    tokenizer = resolve_tokenizer(local.path, reference, int(config["vocab_size"]), progress=progress)
    log.info("loading %s (%s format) with the %s backend on %s in %s", reference, fmt, chosen, target, torch_dtype)

    if chosen == "transformers":
        if fmt == "adapters":
            raise ExplorerError(
                f"{reference} is in the adapters library's format; load it with backend='adapters' (or 'auto')."
            )
        model, has_mlm = _load_native(local.path, reference, config, codes, torch_dtype)
        if int8:
            quantize_int8(model.eval())
        if target.type != "cpu":
            model.to(target)
        model.eval()
        runner = NativeBackend(model, codes)
        runner.has_mlm = has_mlm
    else:
        if int8:
            raise ExplorerError(
                f"{reference} is in the adapters library's format; dtype int8 works with the transformers backend "
                "only. Use float32."
            )
        if fmt == "transformers":
            native, has_mlm = _load_native(local.path, reference, config, codes, torch.float32)
            model = adapter_model_from_native(native, codes)
            del native
            mlm_head = _mlm_head_name(model) if has_mlm else None
            task_adapter = None
        else:
            model = _load_adapter_format(local.path, reference, config, torch_dtype)
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
    log.info("loaded %s in %.1f s (%d languages)", reference, time.perf_counter() - started, len(codes))
    return Loaded(
        reference=reference,
        path=local.path,
        backend=runner,
        tokenizer=tokenizer.tokenizer,
        device=target,
        dtype=torch_dtype,
        languages=codes,
        checkpoint_format=fmt,
        tokenizer_name=tokenizer.name,
        tokenizer_source=tokenizer.source,
        post_hoc_languages=post_hoc_languages(config),
        quantization=INT8 if int8 else "",
    )


def post_hoc_languages(config: dict) -> list[str]:
    """The config's languages marked as added after pre-training (an optional list; anything else is ignored)."""
    marked = config.get("post_hoc_languages")
    if not isinstance(marked, list):
        return []
    return [code for code in marked if isinstance(code, str) and code in config["languages"]]
