"""The X-MOD language codes, their readable names, and validation of user input.

A code's *lang id* is its index in the loaded model's ``config.languages``; that order
differs between checkpoints, so ids are never derived from this table.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from xmod_explorer.errors import ExplorerError

# Every language of facebook/xmod-base and its 13/30/60/75-language variants,
# in xmod-base's own order (for display only; never for lang ids).
LANGUAGE_NAMES: dict[str, str] = {
    "en_XX": "English",
    "id_ID": "Indonesian",
    "vi_VN": "Vietnamese",
    "ru_RU": "Russian",
    "fa_IR": "Persian",
    "sv_SE": "Swedish",
    "ja_XX": "Japanese",
    "fr_XX": "French",
    "de_DE": "German",
    "ro_RO": "Romanian",
    "ko_KR": "Korean",
    "hu_HU": "Hungarian",
    "es_XX": "Spanish",
    "fi_FI": "Finnish",
    "uk_UA": "Ukrainian",
    "da_DK": "Danish",
    "pt_XX": "Portuguese",
    "no_XX": "Norwegian",
    "th_TH": "Thai",
    "pl_PL": "Polish",
    "bg_BG": "Bulgarian",
    "nl_XX": "Dutch",
    "zh_CN": "Chinese (Simplified)",
    "he_IL": "Hebrew",
    "el_GR": "Greek",
    "it_IT": "Italian",
    "sk_SK": "Slovak",
    "hr_HR": "Croatian",
    "tr_TR": "Turkish",
    "ar_AR": "Arabic",
    "cs_CZ": "Czech",
    "lt_LT": "Lithuanian",
    "hi_IN": "Hindi",
    "zh_TW": "Chinese (Traditional)",
    "ca_ES": "Catalan",
    "ms_MY": "Malay",
    "sl_SI": "Slovenian",
    "lv_LV": "Latvian",
    "ta_IN": "Tamil",
    "bn_IN": "Bengali",
    "et_EE": "Estonian",
    "az_AZ": "Azerbaijani",
    "sq_AL": "Albanian",
    "sr_RS": "Serbian",
    "kk_KZ": "Kazakh",
    "ka_GE": "Georgian",
    "tl_XX": "Tagalog",
    "ur_PK": "Urdu",
    "is_IS": "Icelandic",
    "hy_AM": "Armenian",
    "ml_IN": "Malayalam",
    "mk_MK": "Macedonian",
    "be_BY": "Belarusian",
    "la_VA": "Latin",
    "te_IN": "Telugu",
    "eu_ES": "Basque",
    "gl_ES": "Galician",
    "mn_MN": "Mongolian",
    "kn_IN": "Kannada",
    "ne_NP": "Nepali",
    "sw_KE": "Swahili",
    "si_LK": "Sinhala",
    "mr_IN": "Marathi",
    "af_ZA": "Afrikaans",
    "gu_IN": "Gujarati",
    "cy_GB": "Welsh",
    "eo_EO": "Esperanto",
    "km_KH": "Khmer",
    "ky_KG": "Kyrgyz",
    "uz_UZ": "Uzbek",
    "ps_AF": "Pashto",
    "pa_IN": "Punjabi",
    "ga_IE": "Irish",
    "ha_NG": "Hausa",
    "am_ET": "Amharic",
    "lo_LA": "Lao",
    "ku_TR": "Kurdish",
    "so_SO": "Somali",
    "my_MM": "Burmese",
    "or_IN": "Odia",
    "sa_IN": "Sanskrit",
}

# Relatives built on X-MOD add their own codes: SwissBERT (ZurichNLP/swissbert) names its adapters
# after Switzerland's national languages, as its model card does, plus Swiss German dialect (gsw).
EXTRA_NAMES: dict[str, str] = {
    "de_CH": "Swiss Standard German",
    "fr_CH": "French (Switzerland)",
    "it_CH": "Italian (Switzerland)",
    "rm_CH": "Romansh Grischun",
    "gsw": "Swiss German",
}


def display_name(code: str) -> str:
    """Readable label for a code, e.g. ``"German (de_DE)"``; unknown codes show as themselves."""
    name = LANGUAGE_NAMES.get(code) or EXTRA_NAMES.get(code)
    return f"{name} ({code})" if name else code


def _closest(candidate: str, available: Sequence[str]) -> str | None:
    """The available code that a typo most likely meant, matching names and codes case-insensitively."""
    key = candidate.strip().lower()
    by_key: dict[str, str] = {}
    for code in available:
        by_key.setdefault(code.lower(), code)
        by_key.setdefault(code.split("_")[0].lower(), code)
        by_key.setdefault(display_name(code).lower(), code)
        name = LANGUAGE_NAMES.get(code) or EXTRA_NAMES.get(code)
        if name:
            by_key.setdefault(name.lower(), code)
    if key in by_key:
        return by_key[key]
    # "en_US", "pt-BR": the language part usually names the adapter even when the region differs.
    prefix = key.replace("-", "_").split("_")[0]
    if prefix in by_key:
        return by_key[prefix]
    hits = difflib.get_close_matches(key, list(by_key), n=1, cutoff=0.6)
    return by_key[hits[0]] if hits else None


def resolve_language(candidate: object, available: Sequence[str]) -> str:
    """Return the model code for one user-given language or raise ExplorerError naming the fix.

    Exact codes pass; a readable label ("German (de_DE)") is accepted too, since the UI shows those.
    """
    if not isinstance(candidate, str) or not candidate.strip():
        raise ExplorerError(f"A language must be a code such as {available[0]!r}; got {candidate!r}.")
    text = candidate.strip()
    if text in available:
        return text
    if text.endswith(")") and "(" in text:
        inner = text[text.rindex("(") + 1 : -1].strip()
        if inner in available:
            return inner
    guess = _closest(text, available)
    hint = f" Did you mean {guess!r}?" if guess else ""
    shown = ", ".join(available[:90]) + (" ..." if len(available) > 90 else "")
    raise ExplorerError(
        f"Unknown language {text!r} for this model.{hint} Codes are case-sensitive; "
        f"this model has {len(available)}: {shown}."
    )


def resolve_languages(
    candidates: Iterable[object] | str | None,
    available: Sequence[str],
    *,
    max_count: int | None = None,
) -> list[str]:
    """Validate a list of languages (or a comma-separated string) against the model's codes.

    Duplicates are dropped, keeping the first occurrence, so each adapter runs once.
    """
    if candidates is None:
        raise ExplorerError("Choose at least one language.")
    if isinstance(candidates, str):
        candidates = [part for part in candidates.split(",") if part.strip()]
    try:
        items = list(candidates)
    except TypeError:
        raise ExplorerError(f"Languages must be a list of codes such as ['en_XX']; got {candidates!r}.") from None
    if not items:
        raise ExplorerError("Choose at least one language.")
    codes: list[str] = []
    for item in items:
        code = resolve_language(item, available)
        if code not in codes:
            codes.append(code)
    if max_count is not None and len(codes) > max_count:
        raise ExplorerError(
            f"At most {max_count} languages at once here; you chose {len(codes)}. Remove some and retry."
        )
    return codes
