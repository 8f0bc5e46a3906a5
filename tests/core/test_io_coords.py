"""Tests of core.io for coordinates: STAR, BOX, CSV and Topaz reading, writing and errors."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_deeppicker.core import io
from napari_deeppicker.core.errors import BoxSizeError, CoordinatesError

REAL = Path("/work/shared/data/real")
BETAGAL = REAL / "EMPIAR-10017-betagal"
RIBOSOME = REAL / "EMPIAR-10028-ribosome"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="real data not available")
STAR_HEADER = "data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n"


def _count_data_rows(path):
    return sum(1 for line in Path(path).read_text().splitlines() if line.strip()[:1].isdigit())


@needs_real
def test_real_star_files():
    first = BETAGAL / "coords" / "Falcon_2012_06_12-14_33_35_0.star"
    df = io.read_coordinates(first)
    assert len(df) == _count_data_rows(first) == 629
    assert list(df.columns) == ["x", "y"] and df.dtypes.tolist() == [np.float64, np.float64]
    assert (df.x.iloc[0], df.y.iloc[0]) == (179.12, 32.38)
    assert (df.x.iloc[-1], df.y.iloc[-1]) == (193.12, 990.88)
    io.check_coordinates_in_image(df, (1024, 1024), first.name)
    by_mic = io.read_coordinates_by_micrograph(BETAGAL / "coords")
    assert len(by_mic) == 20 and sum(len(d) for d in by_mic.values()) == 13014
    ribo = io.read_coordinates_by_micrograph(RIBOSOME / "coords")
    assert sum(len(d) for d in ribo.values()) == 865 and len(ribo["061_10028"]) == 90
    second = io.read_coordinates_by_micrograph(BETAGAL / "coords_second_picker")
    assert sorted(second) == ["Falcon_2012_06_12-14_57_34_0", "Falcon_2012_06_12-15_14_01_0"]


def test_check_coordinates_in_image():
    df = pd.DataFrame({"x": [-0.5, 10.0, 99.5, 130.0], "y": [0.0, 49.5, 20.0, -3.0]})
    io.check_coordinates_in_image(df.iloc[:3], (50, 100), "ok")
    message = r"picks\.star: 1 of 4 coordinates fall outside the 100 x 50 image"
    with pytest.raises(CoordinatesError, match=message):
        io.check_coordinates_in_image(df, (50, 100), "picks.star")


def _picks(n=5, score=True, micrograph=None, seed=1):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.uniform(0, 1000, n).round(2), "y": rng.uniform(0, 1000, n)})
    if score:
        df["score"] = rng.uniform(0, 1, n)
    if micrograph is not None:
        df["micrograph"] = micrograph
    return df


@pytest.mark.parametrize("ext", [".star", ".box", ".csv", ".txt"])
@pytest.mark.parametrize("score", [True, False])
def test_round_trip_every_format(tmp_path, ext, score):
    df = _picks(score=score and ext != ".box", micrograph="mic_7" if ext == ".txt" else None)
    path = tmp_path / f"mic_7{ext}"
    io.write_coordinates(df, path, box=64)
    back = io.read_coordinates(path)
    pd.testing.assert_frame_equal(back, df, check_exact=True)


def test_round_trip_empty(tmp_path):
    empty = pd.DataFrame({"x": np.zeros(0), "y": np.zeros(0)})
    for ext in (".star", ".box", ".csv"):
        io.write_coordinates(empty, tmp_path / f"e{ext}", box=32)
        back = io.read_coordinates(tmp_path / f"e{ext}")
        assert len(back) == 0 and list(back.columns) == ["x", "y"]


def test_star_text_layout(tmp_path):
    df = pd.DataFrame({"x": [179.12, 148.0], "y": [32.38, 52.5], "score": [0.25, 1.0]})
    io.write_coordinates(df, tmp_path / "plain.star")
    text = (tmp_path / "plain.star").read_text()
    assert "data_\n" in text and "data_optics" not in text
    assert "179.12\t32.38\t0.25\n" in text and "148\t52.5\t1\n" in text
    assert "_rlnAutopickFigureOfMerit #3" in text
    io.write_coordinates(
        df, tmp_path / "optics.star", pixel_size=1.06, micrograph_name="Movies/mic1.mrc"
    )
    text = (tmp_path / "optics.star").read_text()
    assert "data_optics" in text and "data_particles" in text and "_rlnImagePixelSize" in text
    back = io.read_coordinates(tmp_path / "optics.star")
    assert back.attrs["pixel_size"] == 1.06 and set(back.micrograph) == {"mic1"}


def test_star_source_column_round_trip(tmp_path):
    df = _picks(4).assign(source=["model", "manual", "model", "manual"])
    io.write_coordinates(df, tmp_path / "s.star", pixel_size=2.0)
    assert "_deeppickerSource #4" in (tmp_path / "s.star").read_text()
    pd.testing.assert_frame_equal(io.read_coordinates(tmp_path / "s.star"), df, check_exact=True)
    io.write_coordinates(df, tmp_path / "s.csv")
    pd.testing.assert_frame_equal(io.read_coordinates(tmp_path / "s.csv"), df, check_exact=True)


RELION30 = """
# version 30001

data_

loop_
_rlnCoordinateX #1
_rlnCoordinateY #2
_rlnAutopickFigureOfMerit #3
_rlnMicrographName #4
  100.5   200.25   0.9   Micrographs/001.mrc
  300.0   400.0    0.1   Micrographs/002.mrc
  310.0   410.0    0.2   Micrographs/001.mrc
"""

RELION31 = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographPixelSize #3
opticsGroup1 1 0.885

# version 30001

data_particles

loop_
_rlnMicrographName #1
_rlnCoordinateX #2
_rlnCoordinateY #3
_rlnAnglePsi #4
_rlnOpticsGroup #5
MotionCorr/job002/001.mrc 100.5 200.25 -999 1
MotionCorr/job002/002.mrc 300 400 -999 1
MotionCorr/job002/001.mrc 310 410 -999 1
"""


@pytest.mark.parametrize("text", [RELION30, RELION31], ids=["relion30", "relion31"])
def test_read_relion_30_and_31(tmp_path, text):
    (tmp_path / "particles.star").write_text(text)
    df = io.read_coordinates(tmp_path / "particles.star")
    np.testing.assert_array_equal(df.x, [100.5, 300.0, 310.0])
    np.testing.assert_array_equal(df.y, [200.25, 400.0, 410.0])
    assert df.micrograph.tolist() == ["001", "002", "001"]
    assert ("score" in df) == (text is RELION30)
    by_mic = io.read_coordinates_by_micrograph(tmp_path / "particles.star")
    assert sorted(by_mic) == ["001", "002"]
    np.testing.assert_array_equal(by_mic["001"].x, [100.5, 310.0])
    assert by_mic["001"].index.tolist() == [0, 1]


def test_multi_micrograph_star_round_trip(tmp_path):
    df = pd.concat([_picks(3, micrograph="mic_a", seed=2), _picks(4, micrograph="007", seed=3)],
                   ignore_index=True)
    io.write_coordinates(df, tmp_path / "all.star", pixel_size=1.0)
    back = io.read_coordinates(tmp_path / "all.star")
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    by_mic = io.read_coordinates_by_micrograph(tmp_path / "all.star")
    assert {k: len(v) for k, v in by_mic.items()} == {"mic_a": 3, "007": 4}


def test_box_format(tmp_path):
    df = pd.DataFrame({"x": [179.12, 148.0], "y": [32.38, 40.5]})
    io.write_coordinates(df, tmp_path / "m.box", box=32)
    assert (tmp_path / "m.box").read_text() == "163.12\t16.38\t32\t32\n132\t24.5\t32\t32\n"
    back = io.read_coordinates(tmp_path / "m.box")
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    assert back.attrs["box"] == 32
    (tmp_path / "eman.box").write_text("10 20 64 64 -3\n0 0 65 65\n5 5 64 64\n")
    eman = io.read_coordinates(tmp_path / "eman.box")
    np.testing.assert_array_equal(eman.x, [42.0, 32.5, 37.0])
    assert eman.attrs["box"] == 64
    io.write_coordinates(df, tmp_path / "odd.box", box=33)
    pd.testing.assert_frame_equal(io.read_coordinates(tmp_path / "odd.box"), df, check_exact=True)
    with pytest.raises(CoordinatesError, match="needs the box size"):
        io.write_coordinates(df, tmp_path / "x.box")
    with pytest.raises(BoxSizeError, match="positive integer"):
        io.write_coordinates(df, tmp_path / "x.box", box=0)


def test_csv_and_topaz_tables(tmp_path):
    (tmp_path / "t.csv").write_text("X, Y, score, label\n1.5, 2.5, 0.5, a\n3, 4, 0.25, b\n")
    df = io.read_coordinates(tmp_path / "t.csv")
    assert df.columns.tolist() == ["x", "y", "score", "label"]
    assert df.x.tolist() == [1.5, 3.0] and df.label.tolist() == ["a", "b"]
    (tmp_path / "topaz.txt").write_text(
        "image_name\tx_coord\ty_coord\tscore\n"
        "mic1\t10\t20\t-1.5\nmic2\t30\t40\t2.25\nmic1\t50\t60\t0\n"
    )
    topaz = io.read_coordinates(tmp_path / "topaz.txt")
    assert topaz.micrograph.tolist() == ["mic1", "mic2", "mic1"]
    assert topaz.score.tolist() == [-1.5, 2.25, 0.0]
    by_mic = io.read_coordinates_by_micrograph(tmp_path / "topaz.txt")
    assert {k: v.x.tolist() for k, v in by_mic.items()} == {"mic1": [10.0, 50.0], "mic2": [30.0]}
    io.write_coordinates(topaz, tmp_path / "out.tsv")
    assert (tmp_path / "out.tsv").read_text().splitlines()[:2] == [
        "image_name\tx_coord\ty_coord\tscore", "mic1\t10\t20\t-1.5"]
    with pytest.raises(CoordinatesError, match="micrograph_name"):
        io.write_coordinates(topaz.drop(columns="micrograph"), tmp_path / "no.txt")


def test_format_detection_and_override(tmp_path):
    (tmp_path / "a.txt").write_text("x,y\n1,2\n")
    assert io.read_coordinates(tmp_path / "a.txt").x.tolist() == [1.0]
    (tmp_path / "b.dat").write_text("# comment\n" + STAR_HEADER + "1 2\n")
    assert io.read_coordinates(tmp_path / "b.dat").y.tolist() == [2.0]
    (tmp_path / "c.dat").write_text("5 6 10 10\n")
    assert io.read_coordinates(tmp_path / "c.dat", fmt="box").x.tolist() == [10.0]
    with pytest.raises(CoordinatesError, match="c.dat: cannot tell the coordinates format"):
        io.read_coordinates(tmp_path / "c.dat")
    with pytest.raises(CoordinatesError, match="unknown coordinates format"):
        io.read_coordinates(tmp_path / "c.dat", fmt="xml")
    io.write_coordinates(_picks(), tmp_path / "picks.out", fmt="csv")
    back = io.read_coordinates(tmp_path / "picks.out", fmt="csv")
    pd.testing.assert_frame_equal(back, _picks(), check_exact=True)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.star", None, "no such file"),
        ("a.star", "just some text\n", "no data_ block"),
        ("a.star", "data_\n_rlnMicrographName a.mrc\n", "no block with _rlnCoordinateX"),
        ("a.star", "data_\nloop_\n_rlnAnglePsi #1\n1\n", "no block with _rlnCoordinateX"),
        ("a.star", STAR_HEADER + "1 2\nabc 3\n", "non-numeric value 'abc'"),
        ("a.star", STAR_HEADER + "1 2\nnan 3\n", "1 of 2 particles have NaN or infinite"),
        ("a.star", STAR_HEADER + "1 2 3\n", "not a readable STAR"),
        ("a.star", b"\xff\xfe\x00\x81" * 50, "no data_ block"),
        ("a.csv", "a,b\n1,2\n", "needs x and y columns"),
        ("a.csv", "x,y\n1,two\n", "non-numeric value 'two'"),
        ("a.csv", "", "not a readable CSV"),
        ("a.csv", "x,y\n1,2\n3,inf\n", "NaN or infinite"),
        ("a.box", "1 2 3\n", "line 1: expected 'x y width height'"),
        ("a.box", "1 2 64 64\n1 b 64 64\n", "line 2"),
        ("a.box", "1 2 -4 64\n", "invalid box"),
        ("a.txt", "image_name\tx_coord\ty_coord\nm\t1\t\n", "non-numeric value ''"),
        ("a.txt", "x_coord\ty_coord\timage_name\n1\t2\tm\n3\t4\n", "image_name is missing in data"),
        ("a.txt", "image_name\tx_coord\tscore\nm\t1\t2\n", "cannot tell the coordinates format"),
    ],
)
def test_bad_coordinates(tmp_path, name, text, message):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(CoordinatesError, match=message) as info:
        io.read_coordinates(path)
    assert str(path) in str(info.value)


def test_write_rejects_bad_frames(tmp_path):
    with pytest.raises(CoordinatesError, match="need x and y"):
        io.write_coordinates(pd.DataFrame({"row": [1.0]}), tmp_path / "a.csv")
    with pytest.raises(CoordinatesError, match="NaN or infinite"):
        io.write_coordinates(pd.DataFrame({"x": [1.0], "y": [np.nan]}), tmp_path / "a.star")
    with pytest.raises(CoordinatesError, match="cannot tell the format"):
        io.write_coordinates(_picks(), tmp_path / "a.xyz")
    with pytest.raises(CoordinatesError, match="holds one micrograph"):
        io.write_coordinates(pd.DataFrame({"x": [1.0, 2], "y": [1.0, 2], "micrograph": ["a", "b"]}),
                             tmp_path / "a.box", box=8)
    assert list(tmp_path.iterdir()) == []


def test_read_by_micrograph_folder(tmp_path):
    io.write_coordinates(_picks(3, seed=1), tmp_path / "mic1_autopick.star")
    io.write_coordinates(_picks(2, seed=2), tmp_path / "mic2.box", box=16)
    io.write_coordinates(_picks(4, seed=3), tmp_path / "mic3_picks.csv")
    (tmp_path / "README.txt").write_text("these are picks\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    by_mic = io.read_coordinates_by_micrograph(tmp_path)
    assert {k: len(v) for k, v in by_mic.items()} == {"mic1": 3, "mic2": 2, "mic3": 4}
    np.testing.assert_array_equal(by_mic["mic1"].x, _picks(3, seed=1).x)
    io.write_coordinates(_picks(1), tmp_path / "mic2.star")
    with pytest.raises(CoordinatesError, match="mic2 are in both"):
        io.read_coordinates_by_micrograph(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CoordinatesError, match="no coordinates files"):
        io.read_coordinates_by_micrograph(tmp_path / "empty")
    with pytest.raises(CoordinatesError, match="no such file or folder"):
        io.read_coordinates_by_micrograph(tmp_path / "nothing")
