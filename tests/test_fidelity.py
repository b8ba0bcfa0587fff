"""One real-model fidelity run in CI: SmolLM2-135M (GGUF, offline) at 2K tokens of real code."""

import pytest
import torch

from unisparse import UniSparseConfig
from unisparse.eval.fidelity import corpus_tokens, dense_reference, evaluate_selector
from videoqa.models.smollm2 import load_smollm2

# No skip: scripts/setup_env.sh installs the model, and a missing one must fail CI loudly.


@pytest.fixture(scope="module")
def smollm2():
    torch.manual_seed(0)
    return load_smollm2()


@pytest.fixture(scope="module")
def code_2k(smollm2):
    model, tokenizer = smollm2
    ids = corpus_tokens(tokenizer, "code", 2048)
    return ids, dense_reference(model, ids)


def test_real_model_is_real(code_2k):
    _, dense = code_2k
    assert dense.perplexity < 20  # a trained model on real code; a random one scores ~50,000


def test_top_p_one_reproduces_dense(smollm2, code_2k):
    from unisparse.selectors import UniSparseSelector

    model, _ = smollm2
    ids, dense = code_2k
    config = UniSparseConfig(top_p=1.0, min_seq_len=0)  # the sparse path at 2K tokens
    result = evaluate_selector(model, ids, UniSparseSelector(config), dense, config=config, measure_recall=False)
    assert result["density"] == 1.0
    assert abs(result["ppl_change_pct"]) < 0.01
    assert result["top1_agreement"] > 0.998


def test_default_config_is_sparse_and_faithful(smollm2, code_2k):
    from unisparse.selectors import UniSparseSelector

    model, _ = smollm2
    ids, dense = code_2k
    # no config: the harness runs the sparse path although 2K tokens is below the default min_seq_len
    result = evaluate_selector(model, ids, UniSparseSelector(UniSparseConfig()), dense)
    assert len(result["density_per_layer"]) == 30 and len(result["recall_per_layer"]) == 30
    assert result["density"] < 0.75
    assert result["mean_recall"] > 0.9
    assert result["ppl_change_pct"] < 3.0
    assert result["top1_agreement"] > 0.9


def test_a_config_passed_in_is_respected(smollm2, code_2k):
    """The library default min_seq_len (32768) exceeds 2K tokens: every layer runs dense, with a warning."""
    from unisparse.selectors import UniSparseSelector

    model, _ = smollm2
    ids, dense = code_2k
    config = UniSparseConfig()
    with pytest.warns(UserWarning, match="min_seq_len"):
        result = evaluate_selector(model, ids, UniSparseSelector(config), dense, config=config, measure_recall=False)
    assert result["density"] == 1.0 and abs(result["ppl_change_pct"]) < 1e-6
