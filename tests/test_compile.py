"""--compile (torch.compile, opt-in) trains the same curve as eager mode."""

import logging

import pytest

from lmpretrain.trainer import train
from tests.test_run_pretraining import losses, make_args, parameter_file  # noqa: F401  (module fixture)


@pytest.mark.slow
def test_compiled_run_follows_the_eager_curve(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path,  # noqa: F811
                                              caplog):
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    train(make_args(sample_corpus, tiny_tokenizer_dir, eager, parameter_file, "roberta-test", train_steps=4))
    caplog.set_level(logging.INFO, logger="lmpretrain.trainer")
    train(make_args(sample_corpus, tiny_tokenizer_dir, compiled, parameter_file, "roberta-test", train_steps=4,
                    compile=True))
    said = [r.getMessage() for r in caplog.records if "torch.compile compiled" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("step 1 took")  # the first step's time: the compilation
    a, b = losses(eager), losses(compiled)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:  # fused kernels reorder float sums: equal to float tolerance, not bit for bit
        assert b[step] == pytest.approx(a[step], rel=1e-3), (step, a, b)
