"""Property tests of core.io: exact coordinate round trips and robustness to corrupt MRC files."""

import string

import mrcfile
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_deeppicker.core import io
from napari_deeppicker.core.errors import MicrographError

SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

coordinate = st.floats(min_value=-64, max_value=20000, allow_nan=False, allow_infinity=False)
score = st.floats(min_value=0, max_value=1, allow_nan=False)
# starfile reads the loop values "nan" and "NaN" as missing, whatever the column: not a name.
micrograph_name = st.text(
    string.ascii_letters + string.digits + "_-", min_size=1, max_size=12
).filter(lambda s: s not in ("nan", "NaN"))


@st.composite
def picks(draw, with_score=None, with_micrograph=None, with_source=None):
    n = draw(st.integers(1, 25))
    df = pd.DataFrame({
        "x": draw(st.lists(coordinate, min_size=n, max_size=n)),
        "y": draw(st.lists(coordinate, min_size=n, max_size=n)),
    })
    if draw(st.booleans()) if with_score is None else with_score:
        df["score"] = draw(st.lists(score, min_size=n, max_size=n))
    if draw(st.booleans()) if with_micrograph is None else with_micrograph:
        names = draw(st.lists(micrograph_name, min_size=1, max_size=4))
        df["micrograph"] = draw(st.lists(st.sampled_from(names), min_size=n, max_size=n))
    if draw(st.booleans()) if with_source is None else with_source:
        df["source"] = draw(st.lists(st.sampled_from(["model", "manual"]), min_size=n, max_size=n))
    return df


@SETTINGS
@given(df=picks(), pixel_size=st.none() | st.floats(0.1, 20))
def test_star_round_trip(tmp_path, df, pixel_size):
    io.write_coordinates(df, tmp_path / "p.star", pixel_size=pixel_size)
    back = io.read_coordinates(tmp_path / "p.star")
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    assert back.attrs.get("pixel_size") == pixel_size


@SETTINGS
@given(
    df=picks(with_score=False, with_micrograph=False, with_source=False), box=st.integers(1, 512)
)
def test_box_round_trip(tmp_path, df, box):
    io.write_coordinates(df, tmp_path / "p.box", box=box)
    back = io.read_coordinates(tmp_path / "p.box")
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    assert back.attrs["box"] == box


@SETTINGS
@given(df=picks())
def test_csv_round_trip(tmp_path, df):
    io.write_coordinates(df, tmp_path / "p.csv")
    pd.testing.assert_frame_equal(io.read_coordinates(tmp_path / "p.csv"), df, check_exact=True)


@SETTINGS
@given(df=picks(with_micrograph=True, with_source=False))
def test_topaz_round_trip(tmp_path, df):
    io.write_coordinates(df, tmp_path / "p.txt")
    pd.testing.assert_frame_equal(io.read_coordinates(tmp_path / "p.txt"), df, check_exact=True)
    by_mic = io.read_coordinates_by_micrograph(tmp_path / "p.txt")
    assert sorted(by_mic) == sorted(set(df["micrograph"]))
    assert sum(len(part) for part in by_mic.values()) == len(df)


def _valid_mrc_bytes(path, compression=None):
    image = np.random.default_rng(0).normal(size=(12, 16)).astype(np.float32)
    with mrcfile.new(path, overwrite=True, compression=compression) as mrc:
        mrc.set_data(image)
        mrc.voxel_size = 1.5
    return path.read_bytes()


def _read_or_error(path, mmap):
    try:
        mic = io.read_micrograph(path, mmap=mmap)
    except MicrographError as err:
        assert str(path) in str(err)
        return
    data = np.asarray(mic.data)
    assert data.ndim == 2 and data.dtype == np.float32 and min(data.shape) >= 2
    assert np.isfinite(data).all() and data.min() < data.max()
    assert mic.pixel_size is None or (np.isfinite(mic.pixel_size) and mic.pixel_size > 0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@SETTINGS
@given(
    edits=st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 255)), min_size=1, max_size=12),
    keep=st.none() | st.integers(0, 1024 + 12 * 16 * 4),
    mmap=st.booleans(),
)
def test_corrupt_header_only_raises_micrograph_error(tmp_path, edits, keep, mmap):
    raw = bytearray(_valid_mrc_bytes(tmp_path / "valid.mrc"))
    for offset, value in edits:
        raw[offset] = value
    path = tmp_path / "corrupt.mrc"
    path.write_bytes(bytes(raw[:keep]))
    _read_or_error(path, mmap)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@SETTINGS
@given(cut=st.floats(0, 1, exclude_max=True))
def test_truncated_gzip_raises_micrograph_error(tmp_path, cut):
    raw = _valid_mrc_bytes(tmp_path / "valid.mrc.gz", compression="gzip")
    path = tmp_path / "cut.mrc.gz"
    path.write_bytes(raw[: int(cut * len(raw))])
    with pytest.raises(MicrographError, match="cut.mrc.gz"):
        io.read_micrograph(path)
