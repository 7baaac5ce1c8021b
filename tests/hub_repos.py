"""Tiny random stand-ins for the X-MOD repositories on the hub, with their real ids, file names and formats.

Each is built here from a seed (nothing is downloaded) and published on a HubEmulator:

- ``facebook/xmod-base``: config.json, pytorch_model.bin (a torch pickle, with the position-id buffer
  older transformers saved) and README.md on main; model.safetensors only under ``refs/pr/3``. No
  tokenizer. All 81 languages in xmod-base's own order.
- ``facebook/xmod-large-prenorm``: the pre-norm layout (own adapter LayerNorm, reduction factor 4), pickle.
- ``facebook/xmod-base-13-125k``: 13 languages in alphabetical order, pickle.
- ``FacebookAI/xlm-roberta-base`` (and the old id ``xlm-roberta-base``): tokenizer.json,
  sentencepiece.bpe.model, tokenizer_config.json and config.json, an XLM-R-style SentencePiece
  vocabulary whose size (pieces + <pad> offset + <mask>) is the X-MOD models' vocab_size.
- ``AdapterHub/xmod-base``: converted the way the adapters library's own script does (XmodAdapterModel
  from the native checkpoint, every language as a sequential bottleneck adapter, en_XX kept inside),
  saved with model.safetensors; ``AdapterHub/xmod-base-<code>``: README.md, adapter_config.json and
  pytorch_adapter.bin per language.
- ``ZurichNLP/swissbert``: its own SentencePiece vocabulary (sentencepiece.bpe.model, no
  tokenizer.json), adapters de_CH fr_CH it_CH rm_CH gsw, pickle weights.

What is not known about the real repositories is said where it matters (see ADAPTERHUB_BASE_WEIGHTS).
"""

from __future__ import annotations

import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from xmod_explorer.languages import LANGUAGE_NAMES
from xmod_explorer.tiny import SAMPLE_SENTENCES, TinySpec, build_random_checkpoint

XMOD_BASE_ORDER = list(LANGUAGE_NAMES)
THIRTEEN = sorted(["en_XX", "de_DE", "fr_XX", "ru_RU", "ja_XX", "zh_CN", "ar_AR", "hi_IN", "ko_KR", "vi_VN",
                   "id_ID", "sw_KE", "fi_FI"])  # fmt: skip
SWISS = ["de_CH", "fr_CH", "it_CH", "rm_CH", "gsw"]
ADAPTERHUB_LANGUAGES = ["en_XX", "de_DE", "fr_XX", "ja_XX", "ru_RU"]
# Whether AdapterHub/xmod-base holds model.safetensors or pytorch_model.bin is not known here; the loader
# reads both through the adapters library.
ADAPTERHUB_BASE_WEIGHTS = "model.safetensors"
SWISS_SENTENCES = [
    "Der Bundesrat hat heute in Bern über das neue Gesetz beraten.",
    "Le Conseil fédéral a discuté aujourd'hui de la nouvelle loi à Berne.",
    "Il Consiglio federale ha discusso oggi a Berna della nuova legge.",
    "Il Cussegl federal ha discutà oz a Berna davart la nova lescha.",
    "Dr Bundesrat het hüt z Bärn über s nöie Gsetz gredt.",
    "Die Kantone sollen mehr Geld für die Bahn erhalten.",
    "Les cantons doivent recevoir plus d'argent pour le train.",
]
TINY = dict(hidden_size=16, num_heads=2, intermediate_size=32)


@dataclass
class Published:
    """One emulated repository and what a plain-transformers reference needs to check it."""

    repo: str
    source: Path  # a native XmodForMaskedLM folder with the same weights
    tokenizer: Path  # the folder of the tokenizer the checkpoint is meant to run with
    languages: list[str]
    backend: str  # the backend 'auto' picks for it
    own_tokenizer: bool = False


def train_spm(folder: Path, sentences: list[str], vocab_size: int):
    """An XLM-R-style tokenizer from a SentencePiece model trained here (deterministic), saved into folder."""
    import sentencepiece
    from transformers import XLMRobertaTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences * 3),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        num_threads=1,
        shuffle_input_sentence=False,
        hard_vocab_limit=False,
        character_coverage=1.0,
        minloglevel=2,
    )
    (folder / "sentencepiece.bpe.model").write_bytes(model.getvalue())
    tokenizer = XLMRobertaTokenizerFast(vocab_file=str(folder / "sentencepiece.bpe.model"), model_max_length=512)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def pickle_weights(source: Path, out: Path) -> Path:
    """The checkpoint's weights as a torch pickle, as transformers saved them in 2023 (position ids included)."""
    from transformers import XmodForMaskedLM

    model = XmodForMaskedLM.from_pretrained(str(source))
    state = model.state_dict()
    positions = model.config.max_position_embeddings
    state["roberta.embeddings.position_ids"] = torch.arange(positions).expand((1, -1))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    return out


def readme(repo: str, text: str) -> str:
    return f"---\nlicense: mit\n---\n# {repo.split('/')[-1]}\n\nA tiny random stand-in for tests. {text}\n"


def _native(folder: Path, tokenizer, languages: list[str], seed: int, **spec) -> Path:
    return build_random_checkpoint(folder, TinySpec(languages=languages, seed=seed, **{**TINY, **spec}), tokenizer)


def _adapterhub(source: Path, out: Path) -> None:
    """Convert the native folder as the adapters library's conversion script does, into out/base and out/<code>."""
    from adapters import SeqBnConfig, XmodAdapterModel
    from transformers import XmodModel

    native = XmodModel.from_pretrained(str(source))
    config = native.config
    model = XmodAdapterModel.from_pretrained(str(source))
    for code in config.languages:
        model.add_adapter(
            code,
            SeqBnConfig(
                reduction_factor=config.adapter_reduction_factor,
                original_ln_before=config.adapter_layer_norm or config.adapter_reuse_layer_norm,
                original_ln_after=False,
                residual_before_ln=False if config.ln_before_adapter else "post_add",
                non_linearity=config.hidden_act,
            ),
        )
    state = {}
    for key, value in native.state_dict().items():
        found = re.match(r"(.+)\.adapter_modules\.(\w+)\.(dense1|dense2)\.(.+)", key)
        if found:
            prefix, code, layer, suffix = found.groups()
            layer = "adapter_down.0" if layer == "dense1" else "adapter_up"
            key = f"{prefix}.adapters.{code}.{layer}.{suffix}"
        state[f"roberta.{key}"] = value
    model.load_state_dict(state, strict=False)
    model.save_all_adapters(str(out))  # out/<code>/adapter_config.json + pytorch_adapter.bin
    for code in config.languages:
        if code != "en_XX":
            model.delete_adapter(code)
    model.save_pretrained(str(out / "base"), safe_serialization=ADAPTERHUB_BASE_WEIGHTS.endswith(".safetensors"))


def publish_all(hub, root: Path) -> dict[str, Published]:
    """Build every stand-in under root and publish it on hub; returns them by repository id."""
    published: dict[str, Published] = {}
    xlmr = root / "xlm-roberta-base"
    tokenizer = train_spm(xlmr, list(SAMPLE_SENTENCES), 180)
    config = {
        "architectures": ["XLMRobertaForMaskedLM"],
        "model_type": "xlm-roberta",
        "vocab_size": len(tokenizer),
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }
    xlmr_files = {name: xlmr / name for name in ("tokenizer.json", "sentencepiece.bpe.model", "tokenizer_config.json")}
    xlmr_files["config.json"] = json.dumps(config, indent=2)
    for repo in ("FacebookAI/xlm-roberta-base", "xlm-roberta-base"):
        hub.add(repo, {**xlmr_files, "README.md": readme(repo, "XLM-R's tokenizer files.")})

    # facebook/xmod-base: pickle on main, safetensors only in the pull-request revision.
    base = _native(root / "xmod-base", tokenizer, XMOD_BASE_ORDER, seed=10)
    weights = pickle_weights(base, root / "xmod-base-hub" / "pytorch_model.bin")
    main = {"config.json": base / "config.json", "pytorch_model.bin": weights, "README.md": readme("xmod-base", "")}
    hub.add("facebook/xmod-base", main)
    hub.add("facebook/xmod-base", {**main, "model.safetensors": base / "model.safetensors"}, revision="refs/pr/3")
    published["facebook/xmod-base"] = Published("facebook/xmod-base", base, xlmr, XMOD_BASE_ORDER, "transformers")

    large_codes = ["en_XX", "ru_RU", "de_DE", "hi_IN"]
    large = _native(root / "large", tokenizer, large_codes, seed=11, style="prenorm", adapter_reduction_factor=4)
    hub.add(
        "facebook/xmod-large-prenorm",
        {
            "config.json": large / "config.json",
            "pytorch_model.bin": pickle_weights(large, root / "large-hub" / "pytorch_model.bin"),
            "README.md": readme("xmod-large-prenorm", ""),
        },
    )
    published["facebook/xmod-large-prenorm"] = Published(
        "facebook/xmod-large-prenorm", large, xlmr, large_codes, "transformers"
    )

    thirteen = _native(root / "13", tokenizer, THIRTEEN, seed=12)
    hub.add(
        "facebook/xmod-base-13-125k",
        {
            "config.json": thirteen / "config.json",
            "pytorch_model.bin": pickle_weights(thirteen, root / "13-hub" / "pytorch_model.bin"),
            "README.md": readme("xmod-base-13-125k", ""),
        },
    )
    published["facebook/xmod-base-13-125k"] = Published(
        "facebook/xmod-base-13-125k", thirteen, xlmr, THIRTEEN, "transformers"
    )

    # AdapterHub: converted from a native model, base plus one repository per language.
    hub_source = _native(root / "adapterhub-native", tokenizer, ADAPTERHUB_LANGUAGES, seed=13)
    converted = root / "adapterhub"
    _adapterhub(hub_source, converted)
    base_files = {"config.json": converted / "base" / "config.json", "README.md": readme("xmod-base", "Adapters.")}
    base_files[ADAPTERHUB_BASE_WEIGHTS] = converted / "base" / ADAPTERHUB_BASE_WEIGHTS
    hub.add("AdapterHub/xmod-base", base_files)
    for code in ADAPTERHUB_LANGUAGES:
        files = {name: converted / code / name for name in ("adapter_config.json", "pytorch_adapter.bin")}
        hub.add(f"AdapterHub/xmod-base-{code}", {**files, "README.md": readme(f"xmod-base-{code}", "An adapter.")})
    published["AdapterHub/xmod-base"] = Published(
        "AdapterHub/xmod-base", hub_source, xlmr, ADAPTERHUB_LANGUAGES, "adapters"
    )

    # SwissBERT: its own vocabulary, shipped as a SentencePiece model only.
    swiss_tokenizer_dir = root / "swissbert-tokenizer"
    swiss_tokenizer = train_spm(swiss_tokenizer_dir, SWISS_SENTENCES, 150)
    swiss = _native(root / "swissbert", swiss_tokenizer, SWISS, seed=14)
    swiss_files = {
        name: swiss_tokenizer_dir / name
        for name in ("sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json")
    }
    swiss_files.update(
        {
            "config.json": swiss / "config.json",
            "pytorch_model.bin": pickle_weights(swiss, root / "swissbert-hub" / "pytorch_model.bin"),
            "README.md": readme("swissbert", "Own vocabulary."),
        }
    )
    hub.add("ZurichNLP/swissbert", swiss_files)
    published["ZurichNLP/swissbert"] = Published(
        "ZurichNLP/swissbert", swiss, swiss_tokenizer_dir, SWISS, "transformers", own_tokenizer=True
    )
    return published


def copy_tree(source: Path, target: Path) -> Path:
    """A real copy of a Hugging Face cache (symlinks kept), for tests that break one."""
    shutil.copytree(source, target, symlinks=True)
    return target
