"""Language names and validation of user-given codes."""

from __future__ import annotations

import pytest

from xmod_explorer import ExplorerError
from xmod_explorer.languages import LANGUAGE_NAMES, display_name, resolve_language, resolve_languages

XMOD_BASE_ORDER = [
    "en_XX",
    "id_ID",
    "vi_VN",
    "ru_RU",
    "fa_IR",
    "sv_SE",
    "ja_XX",
    "fr_XX",
    "de_DE",
    "ro_RO",
    "ko_KR",
    "hu_HU",
    "es_XX",
    "fi_FI",
    "uk_UA",
    "da_DK",
    "pt_XX",
    "no_XX",
    "th_TH",
    "pl_PL",
    "bg_BG",
    "nl_XX",
    "zh_CN",
    "he_IL",
    "el_GR",
    "it_IT",
    "sk_SK",
    "hr_HR",
    "tr_TR",
    "ar_AR",
    "cs_CZ",
    "lt_LT",
    "hi_IN",
    "zh_TW",
    "ca_ES",
    "ms_MY",
    "sl_SI",
    "lv_LV",
    "ta_IN",
    "bn_IN",
    "et_EE",
    "az_AZ",
    "sq_AL",
    "sr_RS",
    "kk_KZ",
    "ka_GE",
    "tl_XX",
    "ur_PK",
    "is_IS",
    "hy_AM",
    "ml_IN",
    "mk_MK",
    "be_BY",
    "la_VA",
    "te_IN",
    "eu_ES",
    "gl_ES",
    "mn_MN",
    "kn_IN",
    "ne_NP",
    "sw_KE",
    "si_LK",
    "mr_IN",
    "af_ZA",
    "gu_IN",
    "cy_GB",
    "eo_EO",
    "km_KH",
    "ky_KG",
    "uz_UZ",
    "ps_AF",
    "pa_IN",
    "ga_IE",
    "ha_NG",
    "am_ET",
    "lo_LA",
    "ku_TR",
    "so_SO",
    "my_MM",
    "or_IN",
    "sa_IN",
]


def test_every_xmod_base_language_has_a_name():
    assert len(XMOD_BASE_ORDER) == 81
    assert set(XMOD_BASE_ORDER) == set(LANGUAGE_NAMES)
    assert display_name("de_DE") == "German (de_DE)"
    assert display_name("xx_YY") == "xx_YY"


@pytest.mark.parametrize(
    "typo, suggestion",
    [
        ("de_de", "de_DE"),
        ("de", "de_DE"),
        ("German", "de_DE"),
        ("en_US", "en_XX"),
        ("Frnech", "fr_XX"),
        ("ja_JP", "ja_XX"),
    ],
)
def test_typos_name_the_closest_code(typo, suggestion):
    with pytest.raises(ExplorerError) as info:
        resolve_language(typo, XMOD_BASE_ORDER)
    message = str(info.value)
    assert f"Did you mean {suggestion!r}" in message
    assert "this model has 81" in message and "sa_IN" in message


def test_labels_and_lists_are_accepted():
    assert resolve_language("German (de_DE)", XMOD_BASE_ORDER) == "de_DE"
    assert resolve_languages("en_XX, de_DE,,en_XX", XMOD_BASE_ORDER) == ["en_XX", "de_DE"]
    with pytest.raises(ExplorerError, match="At most 2"):
        resolve_languages(["en_XX", "de_DE", "fr_XX"], XMOD_BASE_ORDER, max_count=2)


@pytest.mark.parametrize("bad", [None, [], "", [None], [3], 42])
def test_non_language_values(bad):
    with pytest.raises(ExplorerError):
        resolve_languages(bad, XMOD_BASE_ORDER)


# SwissBERT (ZurichNLP/swissbert), built on X-MOD, has adapters of its own; the facebook/xmod-base-NN-NNNk
# checkpoints use subsets of xmod-base's 81.
SWISSBERT = ["de_CH", "fr_CH", "it_CH", "rm_CH", "gsw"]


@pytest.mark.parametrize("code", XMOD_BASE_ORDER + SWISSBERT)
def test_every_code_of_every_checkpoint_has_a_human_name(code):
    label = display_name(code)
    name = label.removesuffix(f" ({code})")
    assert label.endswith(f" ({code})") and name and name[0].isupper() and "_" not in name


def test_swiss_names_are_understood_as_input():
    with pytest.raises(ExplorerError, match="Did you mean 'gsw'"):
        resolve_language("Swiss German", SWISSBERT)
    assert resolve_language("Romansh Grischun (rm_CH)", SWISSBERT) == "rm_CH"
    assert display_name("gsw") == "Swiss German (gsw)" and display_name("de_CH") == "Swiss Standard German (de_CH)"
