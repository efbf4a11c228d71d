"""The committed toy prior draws what it is told: DDIM + CFG samples have the prompt's colour and shape."""

from pathlib import Path

import pytest

from distill3d.priors.loading import load_prior
from distill3d.priors.toy_checks import check_samples
from distill3d.viz.grid import save_grid

PRIOR = Path(__file__).resolve().parents[1] / "models" / "toy_prior"
CAPTIONS = ["a red sphere", "a blue cube", "a green cylinder", "a yellow cone", "a purple torus"]


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    prior = load_prior(PRIOR)
    images, report = check_samples(prior, CAPTIONS, per_caption=4, steps=40, guidance_scale=3.0, seed=1)
    save_grid(images.permute(0, 2, 3, 1), tmp_path_factory.mktemp("samples") / "samples.png", ncols=4, scale=2)
    return images, report


def test_samples_have_white_backgrounds_and_the_prompted_colour(samples):
    _, report = samples
    assert report["colour_accuracy"] >= 0.9, [(r["prompt"], r["colour"]) for r in report["samples"]]
    assert all(0.3 < r["background_fraction"] < 0.97 for r in report["samples"])


def test_each_shape_matches_its_own_silhouettes_better_than_the_others(samples):
    _, report = samples
    for caption in CAPTIONS:
        scores = report["captions"][caption]["mean_shape_scores"]
        shape = caption.split()[-1]
        assert max(scores, key=scores.get) == shape, (caption, scores)
    assert report["shape_accuracy"] >= 0.6  # per sample, too
