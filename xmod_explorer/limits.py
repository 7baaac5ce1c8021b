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
    # What the web server refuses before a request runs, and how long anything may take or be kept.
    max_request_bytes: int  # one request body (JSON), refused with 413 before it is read
    max_upload_files: int  # files in one upload request (each at most max_upload_bytes, all together too)
    max_job_seconds: float  # the deadline of one request, waiting for memory included
    max_jobs_per_session: int  # requests one browser session or API client may have running or waiting at once
    session_idle_seconds: float  # a session's heads and fine-tuned copy are freed after this long unused
    file_seconds: float  # uploads and files made for download are deleted after this long
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
            max_request_bytes=64 * 1024 * 1024,
            max_upload_files=16,
            max_job_seconds=3600.0,
            max_jobs_per_session=16,
            session_idle_seconds=8 * 3600.0,
            file_seconds=3600.0,
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
            # 40 sentences of 1,000 characters, each written as \uXXXX escapes, fit with room to spare.
            max_request_bytes=1024 * 1024,
            max_upload_files=2,
            max_job_seconds=180.0,
            max_jobs_per_session=3,
            session_idle_seconds=1800.0,
            file_seconds=3600.0,
            max_score_rows=1_000,
        )
