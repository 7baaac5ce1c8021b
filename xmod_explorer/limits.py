"""Input caps that the engine enforces at its entry points (the app picks local or public ones)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Input caps. Public servers get tight ones; a local user may do what the machine allows."""

    max_text_chars: int
    max_languages: int | None
    max_top_k: int
    max_masks: int
    max_sentences: int
    max_train_examples: int
    max_train_seconds: float
    max_upload_bytes: int
    # Pseudo-log-likelihood costs one forward row per (adapter, scored token): 81 adapters x 12 tokens is 972.
    max_score_rows: int = 200_000

    @classmethod
    def local(cls) -> Limits:
        return cls(
            max_text_chars=20_000,
            max_languages=None,
            max_top_k=100,
            max_masks=32,
            max_sentences=400,
            max_train_examples=20_000,
            max_train_seconds=1800.0,
            max_upload_bytes=50 * 1024 * 1024,
            max_score_rows=200_000,
        )

    @classmethod
    def public(cls) -> Limits:
        return cls(
            max_text_chars=1_000,
            max_languages=16,
            max_top_k=20,
            max_masks=4,
            max_sentences=40,
            max_train_examples=600,
            max_train_seconds=90.0,
            max_upload_bytes=1024 * 1024,
            max_score_rows=1_000,
        )
