"""Padding and grouping token rows into forward passes."""

from __future__ import annotations

from xmod_explorer.tokens import length_batches


def test_length_batches_keep_every_row_once_within_the_budget():
    lengths = [5, 30, 7, 7, 12, 3, 100, 7]
    passes = length_batches(lengths, 30)
    assert sorted(i for chosen in passes for i in chosen) == list(range(len(lengths)))
    for chosen in passes:
        longest = max(lengths[i] for i in chosen)
        assert len(chosen) == 1 or len(chosen) * longest <= 30
    assert passes[-1] == [6]  # longer than the budget: a pass of its own
    # Shortest first, and equal lengths in input order: the passes depend on nothing but the rows.
    assert [i for chosen in passes for i in chosen] == [5, 0, 2, 3, 7, 4, 1, 6]


def test_length_batches_of_nothing():
    assert length_batches([], 100) == []
