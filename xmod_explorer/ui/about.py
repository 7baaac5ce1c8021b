"""About tab: X-MOD in a few paragraphs, and how to read each tab."""

from __future__ import annotations

import gradio as gr

ABOUT = """
### What is X-MOD?

Multilingual models such as XLM-R share one set of weights across about a hundred languages. The more languages
share that fixed capacity, the worse each one does: the *curse of multilinguality*.

**X-MOD** (Pfeiffer et al., 2022) gives every language a small module of its own, a *language adapter*, in every
transformer layer. An adapter is a bottleneck: project the hidden state down (768 to 384 in xmod-base), apply a
non-linearity, project it back up, and add it to the state. Everything else (embeddings, attention, feed-forward
blocks) is shared. The adapters are there from the start of pre-training, and each sentence is routed through the
adapter of its own language. xmod-base has 81 of them.

Two consequences make X-MOD interesting to look at:

* **You choose the adapter.** The same sentence can be run through the German adapter or the Japanese one. This app
  does exactly that and shows what changes.
* **Cross-lingual transfer by swapping adapters.** Fine-tune the shared part on a task in one language, with the
  embeddings and adapters frozen; then switch to another language's adapter and the model works in that language
  without having seen task data in it.

### Adding a language

X-MOD's adapters also let a language join after pre-training: train one new adapter, freeze everything else, and
the languages already there cannot change. The embedded mini model shows it. Dutch (`nl_XX`, marked *added post hoc*
in the Model tab) joined its 12 pre-trained languages with
`python -m xmod_explorer.mini add-language nl_XX --corpus data/corpus`: 263,680 parameters trained, 13.6 minutes on
one CPU thread for both of the paper's initialisations (a copy of the German adapter, kept, and the mean of all 12).

* **Nothing else moved**: every original tensor is bit-identical to a SHA-256 record made before the addition, so the
  other languages' predictions are exactly what they were.
* **The new adapter works**: on held-out Dutch text it fills 40.5 % of masked tokens (95 % interval 39.1 to 41.8),
  against 9.8 % (9.0 to 10.6) for the best original adapter, German's.
* **But not like a pre-trained language**: the original languages reach 29.1 % (28.6 to 29.6) with their own
  adapters, a figure not comparable with Dutch's, because the frozen tokenizer cuts Dutch into small pieces that are
  easy to guess. On whole words Dutch offers only 52 in its held-out sentences, and the new adapter fills none of
  them; the original languages' adapters fill 6.8 % to 37.4 % of theirs.

### How to read this app

* **Fill the mask**: one sentence, several adapters, their top predictions side by side. Adapters of related
  languages often agree; an adapter of an unrelated language tends to pull the prediction towards its own language.
* **Compare adapters**: the hidden states of one sentence under several adapters, layer by layer. Layer 0 is the
  embedding output before any adapter, so every adapter agrees there (similarity 1): a built-in sanity check.
  Raw cosine between transformer states is always high; the centred variant first subtracts the model's mean
  sentence vector (one fixed vector per layer), so a pair's value never depends on what else you chose.
* **Across languages**: translations, each through its own adapter. Compare translation pairs with random
  re-pairings of the same sentences (the shaded band, a permutation test): only a value above its band says more
  than chance about how language-neutral a layer is, and with fewer than 5 sentences per language the test cannot.
* **Classify**: the transfer experiment above, small enough to run in a browser.
* **Model**: what is loaded, and why.

### Reference

Jonas Pfeiffer, Naman Goyal, Xi Victoria Lin, Xian Li, James Cross, Sebastian Riedel, Mikel Artetxe. 2022.
*Lifting the Curse of Multilinguality by Pre-training Modular Transformers.* NAACL 2022.
[arXiv:2205.06266](https://arxiv.org/abs/2205.06266)
"""


def build_about_tab() -> None:
    gr.Markdown(ABOUT)
