"""How reliable is ``--polarity auto``? Polarity estimates on real and simulated micrographs.

Every micrograph is tested as it is and multiplied by -1 (so each real set is also seen with
bright particles), with :func:`~napari_deeppicker.core.calibration.estimate_polarity` (sign of
the particle-scale band-pass skewness). Simulated micrographs cover four shapes, raw and
denoised looks, boxes 32-200, some with crystalline ice and carbon film.

Usage::

    python benchmarks/polarity.py [--out benchmarks/results/polarity.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import train_general as tg  # noqa: E402

from napari_deeppicker.core.calibration import estimate_polarity, polarity_skewness  # noqa: E402
from napari_deeppicker.core.synthetic import simulate_micrograph  # noqa: E402

log = logging.getLogger("polarity")


def cases(n_real: int):
    """(group, image, box, truth) with truth the polarity of the image as given."""
    for key in tg.MOLECULES:
        images, _, box = tg.load_real(key)
        for name in sorted(images)[:n_real]:
            yield f"real-{key}", images[name], box, "dark"
    configs = [(32, False, False), (64, False, False), (128, False, False), (64, True, False),
               (128, False, True), (200, True, True)]
    for shape in ("ring", "elongated", "shell", "small"):
        for look in ("raw", "denoised"):
            for bright in (False, True):
                for k, (box, ice, carbon) in enumerate(configs):
                    image, _ = simulate_micrograph(1024, shape=shape, shape_seed=700 + k, box=box,
                                                   seed=k, ice=ice, carbon=carbon, invert=bright,
                                                   denoised=look == "denoised")
                    dirt = "+".join(n for n, on in (("ice", ice), ("carbon", carbon)) if on)
                    yield (f"synthetic-{look}-{dirt or 'clean'}", image, box,
                           "bright" if bright else "dark")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-real", type=int, default=10, help="micrographs per real set")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "polarity.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    tally = defaultdict(lambda: {"n": 0, "correct": 0, "seconds": 0.0, "skewness": []})
    flip = {"dark": "bright", "bright": "dark"}
    for group, image, box, truth in cases(args.n_real):
        for shown, expected in ((image, truth), (-image, flip[truth])):
            start = time.perf_counter()
            guess = estimate_polarity(shown, box)
            row = tally[group]
            row["seconds"] += time.perf_counter() - start
            row["n"] += 1
            row["correct"] += guess == expected
            row["skewness"].append(abs(polarity_skewness(shown, box)))
    rows = [{"group": k, "method": "skewness", "n": v["n"], "correct": v["correct"],
             "accuracy": v["correct"] / v["n"], "seconds_per_image": v["seconds"] / v["n"],
             "min_abs_skewness": float(min(v["skewness"]))} for k, v in tally.items()]
    for row in rows:
        log.info("%s", row)
    Path(args.out).write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
