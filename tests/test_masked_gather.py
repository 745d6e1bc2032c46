"""Compile-friendly shapes (issue 15, item 4): batches padded to the sequence length under --compile, and the
masked positions gathered by an index list of a host-known size instead of a boolean mask, with the same losses and
gradients as the boolean path."""

import pytest
import torch

from lmpretrain.masking import CausalLMCollator, MaskingConfig, MLMCollator, masked_index
from lmpretrain.models import family_names
from tests.test_flops import a_batch, tiny
from tests.test_run_pretraining import parameter_file  # noqa: F401  (module fixture)


def test_masked_index_selects_what_the_boolean_mask_selects():
    labels = torch.full((3, 10), -100)
    labels[0, [1, 4]] = torch.tensor([7, 8])
    labels[2, [0, 9]] = torch.tensor([5, 6])
    index, targets = masked_index(labels, bucket=8)
    assert index.shape == targets.shape == (8,)
    assert index[:4].tolist() == [1, 4, 20, 29] and targets.tolist() == [7, 8, 5, 6] + [-100] * 4
    hidden = torch.randn(3, 10, 5)
    assert torch.equal(hidden.flatten(0, 1)[index[:4]], hidden[labels != -100])
    assert masked_index(torch.full((2, 4), -100), bucket=8)[0].shape == (8,)  # nothing masked: one bucket of padding


@pytest.mark.parametrize("name", family_names())
def test_the_gathered_path_gives_the_boolean_paths_losses_and_gradients(name):
    """Masked LMs gather their masked rows, causal LMs their rows with a next token; with padding rows in the index."""
    results = {}
    for gathered in (False, True):
        model = tiny(name)
        batch = a_batch(model.family)
        if gathered and model.family.collator == "causal":
            batch["predicted_index"], batch["predicted_labels"] = masked_index(batch["labels"][:, 1:], bucket=16)
            assert batch["predicted_index"].numel() > int((batch["labels"][:, 1:] != -100).sum())
        elif gathered:
            batch["masked_index"], batch["masked_labels"] = masked_index(batch["labels"], bucket=16)
            assert batch["masked_index"].numel() > int((batch["labels"] != -100).sum())  # padding rows present
        out = model(batch)
        sum(out[t.name] for t in model.family.loss_terms).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[gathered] = ({k: v.detach() for k, v in out.items()}, grads)
    (out_a, grads_a), (out_b, grads_b) = results[False], results[True]
    assert out_a.keys() == out_b.keys()
    for key in out_a:
        torch.testing.assert_close(out_b[key], out_a[key], rtol=1e-6, atol=1e-7, msg=key)
    assert grads_a.keys() == grads_b.keys()
    for key in grads_a:
        torch.testing.assert_close(grads_b[key], grads_a[key], rtol=1e-5, atol=1e-7, msg=key)


def test_collators_pad_to_a_fixed_length_and_give_the_index():
    instances = [{"input_ids": list(range(5, 5 + n)), "position": i} for i, n in enumerate((7, 12, 9))]
    config = MaskingConfig(mlm_probability=0.3, pad_to_length=32, masked_index_bucket=8)
    batch = MLMCollator(config, vocab_size=40, pad_token_id=0, mask_token_id=1, special_token_ids=[2, 3],
                        seed=0)(instances)
    assert batch["input_ids"].shape == (3, 32) and batch["masked_index"].numel() % 8 == 0
    real = batch["masked_labels"] != -100
    assert int(real.sum()) == int((batch["labels"] != -100).sum())
    assert torch.equal(batch["labels"].flatten()[batch["masked_index"][real]], batch["masked_labels"][real])
    plain = MLMCollator(MaskingConfig(mlm_probability=0.3), vocab_size=40, pad_token_id=0, mask_token_id=1,
                        special_token_ids=[2, 3], seed=0)(instances)
    assert plain["input_ids"].shape == (3, 16) and "masked_index" not in plain  # as before: longest, multiple of 8
    assert torch.equal(batch["labels"][:, :16], plain["labels"])  # the same masks whatever the padding
    causal = CausalLMCollator(pad_token_id=0, pad_to_length=32, predicted_index_bucket=8)(instances)
    assert causal["input_ids"].shape == (3, 32) and causal["predicted_index"].numel() % 8 == 0
    real = causal["predicted_labels"] != -100
    assert int(real.sum()) == 6 + 11 + 8  # each instance's tokens after its first
    assert torch.equal(causal["labels"][:, 1:].flatten()[causal["predicted_index"][real]],
                       causal["predicted_labels"][real])


def test_a_compiled_runs_batches_have_the_sequence_length_and_the_index(sample_corpus, tiny_tokenizer_dir,
                                                                         parameter_file, tmp_path):  # noqa: F811
    from lmpretrain.data_setup import build_run_data
    from lmpretrain.distributed import init_distributed
    from lmpretrain.prepare import place_run, prepare_run
    from tests.test_run_pretraining import make_args

    shapes = {}
    for compile_model in (False, True):
        run = prepare_run(make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / f"out{compile_model}",
                                    parameter_file, "bert-test", compile=compile_model))  # pairs: lengths vary
        try:
            layout = init_distributed(run.description.system.node_batch_sizes, local_rank=-1, node_rank=-1,
                                      device="cpu")
            data = build_run_data(place_run(run, layout), layout)
            batches = [data.collator([data.train_dataset[p]]) for p in range(32)]  # one instance a batch
        finally:
            run.encoder.close()
        shapes[compile_model] = {tuple(b["input_ids"].shape) for b in batches}
        assert ("masked_index" in batches[0]) == compile_model  # a CPU run without compile: the boolean path
    assert shapes[True] == {(1, 64)}  # the sequence length, whatever the instances' lengths
    assert any(length < 64 for _, length in shapes[False])  # without compile: the longest instance, rounded to 8
