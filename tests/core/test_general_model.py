"""The shipped general model, polarity estimation and the automatic threshold (calibration.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_deeppicker.core.calibration import (
    auto_threshold,
    dataset_polarity,
    estimate_polarity,
    otsu_threshold,
    pick_auto,
    polarity_skewness,
    threshold_from_null,
)
from napari_deeppicker.core.evaluation import evaluate, match_picks
from napari_deeppicker.core.model import builtin_model_path, load_model
from napari_deeppicker.core.picking import PickConfig, pick_micrograph
from napari_deeppicker.core.synthetic import simulate_micrograph

BOX = 48
SIZE = 384


@pytest.fixture(scope="module")
def general():
    return load_model("general")


@pytest.fixture(scope="module")
def unseen():
    """A molecule the model never saw: a random variant (shape_seed) of a shape family, raw look."""
    return simulate_micrograph(SIZE, shape="multilobe", shape_seed=987_654, box=BOX, seed=4321,
                               defocus_um=2.0, n_particles=30)


@pytest.fixture(scope="module")
def noise():
    return simulate_micrograph(SIZE, box=BOX, noise_only=True, seed=4322, defocus_um=2.0)[0]


def test_general_model_ships_in_the_package_and_loads_offline(general):
    path = builtin_model_path("general")
    assert path.is_file() and path.stat().st_size < 400_000
    assert general.metadata["path"] == str(path)
    assert general.metadata["n_parameters"] == sum(p.numel() for p in general.net.parameters())
    assert general.preprocess.invert is False  # particles dark, as the network was trained


def test_general_model_metadata_records_recipe_data_seed_time_and_device(general):
    meta = general.metadata["general"]
    json.dumps(meta)
    assert meta["recipe"]["name"] == "full"  # chosen by general_lomo.py (BENCHMARKS.md)
    assert meta["recipe"]["synthetic"] and meta["recipe"]["real"] == ["betagal", "ribosome"]
    assert isinstance(meta["seed"], int)
    assert meta["device"] in {"cpu", "cuda", "mps"} or meta["device"].startswith("cuda")
    assert meta["seconds_total"] > 0 and meta["date"].startswith("20")
    assert meta["command"].startswith("python scripts/train_general.py")
    names = [s["name"] for s in general.metadata["training"]["sets"]]
    real = {d["name"] for d in meta["data"]["real"]}
    assert real == {"betagal", "ribosome"} and real <= set(names)
    assert len(names) == len(meta["data"]["real"]) + len(meta["data"]["synthetic"])
    used = {s["positives_used"] for s in general.metadata["training"]["sets"]}
    assert len(used) == 1  # the paper's equal shares


def test_general_model_picks_an_unseen_shape_variant(general, unseen):
    image, truth = unseen
    picks, _ = pick_micrograph(general, image, BOX, PickConfig(threshold="auto"))
    result = match_picks(picks, truth, BOX)
    assert result.recall >= 0.7, result
    assert result.precision >= 0.6, result
    assert result.centre_error < 0.12
    report = evaluate({"m": pick_micrograph(general, image, BOX, PickConfig(threshold=0.0))[0]},
                      {"m": truth}, BOX)
    assert report.average_precision >= 0.7


@pytest.mark.parametrize("denoised", [False, True])
def test_general_model_picks_nothing_on_pure_noise(general, denoised):
    """The paper's "Einstein from noise" check, raw-looking and denoised-looking: no pick at all
    (threshold 0), because nothing scores higher than on the micrograph's own noise null."""
    image, _ = simulate_micrograph(SIZE, box=BOX, noise_only=True, seed=4323, denoised=denoised)
    picks, _ = pick_micrograph(general, image, BOX, PickConfig(threshold=0.0))
    assert len(picks) == 0 and picks.attrs["null_check"]["particle_free"]


def test_auto_threshold_picks_nothing_on_noise_and_most_particles(general, unseen, noise):
    on_particles, _, t_particles = pick_auto(general, unseen[0], BOX)
    on_noise, _, _ = pick_auto(general, noise, BOX)
    assert len(on_particles) >= 0.7 * len(unseen[1])
    assert len(on_noise) == 0
    assert on_particles.attrs["threshold"] == t_particles
    assert (on_particles["score"] > t_particles).all()


def test_auto_threshold_through_pick_config_matches_pick_auto(general, unseen):
    direct, _, threshold = pick_auto(general, unseen[0], BOX)
    via_config, _ = pick_micrograph(general, unseen[0], BOX, PickConfig(threshold="auto", top_n=5))
    assert via_config.attrs["threshold"] == threshold
    assert np.allclose(via_config[["x", "y"]].to_numpy(), direct[["x", "y"]].to_numpy()[:5])
    assert auto_threshold(general, unseen[0], BOX) == pytest.approx(threshold)
    null_based = auto_threshold(general, unseen[0], BOX, method="null")
    assert 0.0 < null_based <= 1.0
    with pytest.raises(ValueError, match="method"):
        auto_threshold(general, unseen[0], BOX, method="median")


def test_otsu_threshold_splits_two_score_groups_on_the_logit_scale():
    rng = np.random.default_rng(0)
    background = 1 / (1 + np.exp(-rng.normal(-4.0, 1.5, 300)))
    particles = 1 / (1 + np.exp(-rng.normal(5.0, 0.7, 60)))  # saturated near 1
    t = otsu_threshold(np.concatenate([background, particles]))
    assert 0.5 <= t < particles.min()
    assert np.mean(particles > t) > 0.95 and np.mean(background > t) < 0.05
    # Never below the floor (pure noise scored low stays unpicked); degenerate inputs.
    assert otsu_threshold(background) >= 0.5
    assert otsu_threshold(np.array([0.2, 0.3])) == 0.5
    assert otsu_threshold(np.full(10, 0.9), minimum=0.6) == 0.6


def test_threshold_from_null_controls_the_fraction_explained_by_the_null():
    rng = np.random.default_rng(0)
    null = rng.uniform(0.0, 0.6, 200)
    particles = rng.uniform(0.7, 1.0, 50)
    scores = np.concatenate([null, particles])
    t = threshold_from_null(scores, null, max_fdr=0.1)
    assert 0.55 <= t < 0.7
    kept = scores[scores > t]
    assert np.sum(null > t) <= 0.1 * kept.size
    # The micrograph is its own null (pure noise): nothing passes.
    assert threshold_from_null(null, null, max_fdr=0.1) == 1.0
    assert threshold_from_null(np.array([]), null) == 1.0
    # A stricter rate never lowers the threshold.
    assert threshold_from_null(scores, null, max_fdr=0.02) >= t


@pytest.mark.parametrize("denoised", [False, True])
@pytest.mark.parametrize("bright", [False, True])
def test_estimate_polarity_on_synthetic_micrographs(bright, denoised):
    image, _ = simulate_micrograph(SIZE, shape="ring", shape_seed=3, box=BOX, seed=11,
                                   defocus_um=2.5, invert=bright, denoised=denoised)
    expected = "bright" if bright else "dark"
    assert estimate_polarity(image, BOX) == expected
    assert estimate_polarity(-image, BOX) != expected  # multiplying by -1 flips it
    assert np.sign(polarity_skewness(image, BOX)) == (1 if bright else -1)


def test_dataset_polarity_majority_vote():
    dark = [simulate_micrograph(SIZE, box=BOX, seed=s, defocus_um=2.0)[0] for s in range(3)]
    polarity, votes = dataset_polarity(dark, BOX, max_images=2)
    assert polarity == "dark" and votes == ["dark", "dark"]
    polarity, votes = dataset_polarity([-d for d in dark], BOX)
    assert polarity == "bright" and len(votes) == 3


def test_cli_pick_general_with_auto_polarity_and_threshold(unseen, tmp_path, capsys):
    from napari_deeppicker.cli import main
    from napari_deeppicker.core.io import read_coordinates, write_micrograph

    image, truth = unseen
    write_micrograph(tmp_path / "bright.mrc", 2 * image.mean() - image)  # particles bright
    code = main(["pick", str(tmp_path / "bright.mrc"), "--model", "general", "--box", str(BOX),
                 "--out", str(tmp_path / "out"), "--polarity", "auto", "--threshold", "auto",
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "pick_summary.json").read_text())
    assert summary["polarity"] == "bright" and summary["polarity_votes"] == ["bright"]
    assert summary["threshold"] == "auto" and summary["invert"] is True
    picks = read_coordinates(tmp_path / "out" / "bright.star")
    assert match_picks(picks, truth, BOX).recall >= 0.7
    assert main(["pick", str(tmp_path / "bright.mrc"), "--model", "general", "--box", "48",
                 "--out", str(tmp_path / "x"), "--threshold", "high"]) == 2
