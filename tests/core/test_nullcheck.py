"""The "Einstein from noise" guard: micrographs compared with their phase-randomised null."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from napari_deeppicker.core._batch_compute import pick_group
from napari_deeppicker.core.evaluation import match_picks
from napari_deeppicker.core.io import write_micrograph
from napari_deeppicker.core.nullcheck import compare_to_null, null_prepared
from napari_deeppicker.core.picking import PickConfig, pick_micrograph
from napari_deeppicker.core.preprocess import prepare_micrograph
from napari_deeppicker.core.synthetic import simulate_micrograph

BOX = 48


@pytest.fixture(scope="module")
def noise_images():
    return [simulate_micrograph(512, box=BOX, noise_only=True, seed=100 + s, defocus_um=2.0)[0]
            for s in range(2)]


def _probs(logits):
    return 1 / (1 + np.exp(-np.asarray(logits)))


def test_compare_to_null_rule():
    rng = np.random.default_rng(0)
    null = _probs(rng.normal(-2, 2, 400))
    same = _probs(rng.normal(-2, 2, 400))
    check = compare_to_null(same, null)
    assert check.particle_free and abs(check.evidence) < 0.5 and check.ks_pvalue > 0.01
    assert (check.n_candidates, check.n_null) == (400, 400)
    # Thirty candidates far above anything the null produces: particles.
    with_particles = np.concatenate([same, _probs(rng.normal(9, 1, 30))])
    check = compare_to_null(with_particles, null)
    assert not check.particle_free and check.evidence > 5
    # A whole-distribution shift with no outstanding top (crowded micrograph): the KS test.
    shifted = _probs(rng.normal(-1, 2, 400))
    check = compare_to_null(shifted, null, margin=50.0)
    assert not check.particle_free and check.ks_pvalue < 1e-3
    # Degenerate inputs.
    assert compare_to_null([], null).particle_free
    assert not compare_to_null(same, []).particle_free
    json.dumps(compare_to_null(same, null).to_dict())


def test_null_prepared_keeps_the_spectrum_and_range_and_is_reproducible(noise_images):
    prepared = prepare_micrograph(noise_images[0], BOX, keep_unclipped=True)
    a, b = null_prepared(prepared, 0), null_prepared(prepared, 0)
    assert np.array_equal(a.data, b.data) and a.scale == prepared.scale
    assert not np.array_equal(a.data, null_prepared(prepared, 1).data)
    assert a.data.min() >= prepared.data.min() and a.data.max() <= prepared.data.max()
    # Same amplitude spectrum (up to the self-conjugate rows/columns a real image forces).
    amp = np.abs(np.fft.rfft2(prepared.unclipped - prepared.unclipped.mean()))
    null_amp = np.abs(np.fft.rfft2(a.unclipped - a.unclipped.mean()))
    inner = (slice(1, None), slice(1, -1))
    assert np.allclose(null_amp[inner], amp[inner], rtol=1e-3, atol=1e-4 * amp.max())


def test_pure_noise_gives_no_pick_at_all_and_particles_still_do(trained_model, synthetic_set,
                                                                 noise_images):
    image, truth = synthetic_set[3]
    picks, _ = pick_micrograph(trained_model, image, BOX)
    assert not picks.attrs["null_check"]["particle_free"]
    assert match_picks(picks, truth, BOX).recall >= 0.9
    for noise in noise_images:
        picks, score_map = pick_micrograph(trained_model, noise, BOX, PickConfig(threshold=0.0))
        assert len(picks) == 0 and picks.attrs["null_check"]["particle_free"]
        assert score_map.data.size > 0  # the map itself is not changed
        raw, _ = pick_micrograph(trained_model, noise, BOX,
                                 PickConfig(threshold=0.0, null_check=False))
        assert len(raw) > 0 and "null_check" not in raw.attrs


def test_batched_picking_checks_the_null_exactly_as_single_picking(trained_model, synthetic_set,
                                                                    noise_images):
    images = [synthetic_set[3][0], noise_images[0]]
    mics = [SimpleNamespace(data=im) for im in images]
    config = PickConfig(threshold=0.2)
    grouped = pick_group(trained_model, mics, BOX, config, None)
    for image, (picks, score_map) in zip(images, grouped):
        single, single_map = pick_micrograph(trained_model, image, BOX, config)
        assert np.allclose(score_map.data, single_map.data, atol=1e-5)
        assert np.allclose(picks.to_numpy(), single.to_numpy(), atol=1e-4)
        assert picks.attrs["null_check"]["particle_free"] == single.attrs["null_check"]["particle_free"]
    assert [p.attrs["null_check"]["particle_free"] for p, _ in grouped] == [False, True]
    with pytest.raises(ValueError, match="null"):
        from napari_deeppicker.core.picking import finish_picks, score_prepared

        prepared = prepare_micrograph(images[0], BOX, keep_unclipped=True)
        finish_picks(score_prepared(trained_model, prepared), prepared, BOX, config,
                     images[0].shape, None)


def test_cli_reports_particle_free_micrographs(trained_model, synthetic_set, noise_images,
                                               tmp_path, capsys):
    from napari_deeppicker.cli import main
    from napari_deeppicker.core.io import read_coordinates
    from napari_deeppicker.core.model import save_model

    model_file = save_model(trained_model, tmp_path / "m.safetensors")
    mics = tmp_path / "mics"
    mics.mkdir()
    write_micrograph(mics / "particles.mrc", synthetic_set[3][0])
    write_micrograph(mics / "noise.mrc", noise_images[0])
    base = ["pick", str(mics), "--model", str(model_file), "--box", str(BOX), "--device", "cpu"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "1 micrographs look particle-free" in err and "noise.mrc" in err
    summary = json.loads((tmp_path / "a" / "pick_summary.json").read_text())
    assert summary["n_particle_free"] == 1 and summary["null_check"] is True
    flagged = {r["micrograph"].rsplit("/", 1)[-1]: r.get("particle_free", False)
               for r in summary["micrographs"]}
    assert flagged == {"noise.mrc": True, "particles.mrc": False}
    assert len(read_coordinates(tmp_path / "a" / "noise.star")) == 0
    assert len(read_coordinates(tmp_path / "a" / "particles.star")) > 0
    assert main(base + ["--out", str(tmp_path / "b"), "--threshold", "0", "--no-null-check"]) == 0
    capsys.readouterr()
    assert len(read_coordinates(tmp_path / "b" / "noise.star")) > 0
    summary = json.loads((tmp_path / "b" / "pick_summary.json").read_text())
    assert summary["n_particle_free"] == 0 and summary["null_check"] is False
    assert replace(PickConfig(), null_check=False).to_dict()["null_check"] is False
