"""`replay` on the same machine: the same cell trained twice has bit-identical weights."""

import pytest

from rnngen_flows.replay import replay
from rnngen_flows.train import train

pytestmark = pytest.mark.integration

TINY = {"hidden": 6, "epochs": 1, "n_train": 300, "n_test": 200, "eval_batch_size": 100}


def test_replay_on_this_machine_is_identical(prefect_harness, ray_local, corpus_out, tmp_path):
    out = str(corpus_out)
    train(out=out, lengths=[4, 5], sigmas=[0.0, 0.2], seeds=[0, 1], overrides=TINY)
    result = replay(out=out, cells=2, scratch=str(tmp_path / "scratch"), corpus_from=out)
    assert result["verdict"] == "identical"
    assert len(result["cells"]) == 2
    assert all("weights equal: identical" in line for line in result["cells"])
    assert {line.split()[0] for line in result["cells"]} == {"L=4", "L=5"}
