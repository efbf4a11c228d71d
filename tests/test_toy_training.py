"""Training the pixel toy prior: a tiny run saves a loadable prior, and a run killed mid-way resumes from its work
dir to exactly the state an uninterrupted run reaches."""

from __future__ import annotations

import json

import pytest
from tiny_models import Killed, kill_at
import torch

from distill3d.priors import toy_training
from distill3d.priors.loading import load_prior
from distill3d.priors.toy import ToyPrior, ToyPriorArchitecture
from distill3d.priors.toy_training import ToyTrainConfig, train_toy_prior

TINY = ToyTrainConfig(
    steps=6, batch_size=4, bank_views=24, checkpoint_every=2, warmup_steps=1, seed=1,
    architecture=ToyPriorArchitecture(resolution=16, block_out_channels=(16, 32), cross_attention_levels=(False, True),
                                      self_attention_levels=(True, False), text_width=32, text_layers=1),
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    stats = train_toy_prior(TINY, root / "prior", root / "work", progress=False)
    return root, stats


def test_tiny_run_saves_a_prior_that_loads(uninterrupted):
    root, stats = uninterrupted
    prior = load_prior(root / "prior")
    assert isinstance(prior, ToyPrior) and prior.resolution == 16
    info = json.loads((root / "prior" / "prior.json").read_text())
    assert info["kind"] == "toy" and info["training"]["steps"] == 6 and info["stats"]["steps"] == 6
    assert info["training"]["held_out"] == list(TINY.held_out)
    assert info["architecture"]["self_attention_levels"] == [True, False]
    assert "AttnDownBlock2D" in prior.unet.config.down_block_types
    assert stats["cpu_seconds"] > 0 and len(stats["loss_curve"]) == 1
    assert (root / "work" / "view_bank_16.pt").is_file()  # the bank is cached for a resumed run


@pytest.mark.parametrize("die_at", [4, 5])  # right after a checkpoint, and between two (step 5 is done twice)
def test_killed_run_resumes_to_the_same_weights(uninterrupted, tmp_path, monkeypatch, die_at):
    root, stats = uninterrupted
    monkeypatch.setattr(toy_training, "_after_step", kill_at(die_at))
    with pytest.raises(Killed):
        train_toy_prior(TINY, tmp_path / "prior", tmp_path / "work", progress=False)
    assert not (tmp_path / "prior").exists()
    assert torch.load(tmp_path / "work" / "train_checkpoint.pt", weights_only=False)["step"] == 4
    monkeypatch.setattr(toy_training, "_after_step", lambda step: None)
    resumed = train_toy_prior(TINY, tmp_path / "prior", tmp_path / "work", progress=False)
    assert resumed["steps"] == 6 and resumed["final_loss"] == pytest.approx(stats["final_loss"], abs=0)
    a, b = ToyPrior.load(root / "prior"), ToyPrior.load(tmp_path / "prior")
    for (name, p), q in zip(a.unet.state_dict().items(), b.unet.state_dict().values()):
        assert torch.equal(p, q), name
    for p, q in zip(a.text_encoder.state_dict().values(), b.text_encoder.state_dict().values()):
        assert torch.equal(p, q)


def test_v1_folder_layout_still_loads(tmp_path):
    """prior.json files written before self_attention_levels existed (models/toy_prior v1) still validate."""
    arch = ToyPriorArchitecture(resolution=16, block_out_channels=(16, 32), cross_attention_levels=(False, True),
                                text_width=32, text_layers=1)
    ToyPrior.build(arch).save(tmp_path / "p")
    info = json.loads((tmp_path / "p" / "prior.json").read_text())
    info["architecture"].pop("self_attention_levels")
    info["architecture"]["extra"] = {}
    (tmp_path / "p" / "prior.json").write_text(json.dumps(info))
    prior = load_prior(tmp_path / "p")
    assert list(prior.unet.config.down_block_types) == ["DownBlock2D", "CrossAttnDownBlock2D"]
