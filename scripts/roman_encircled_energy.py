"""Print the Roman PSF's encircled energy in square stamps, per band (the table in
``orchestrator/dia/pipeline/roman_ee.py``).

For each band, GalSim's Roman PSF (``galsim.roman.getPSF`` at the band's effective wavelength,
pixel-convolved, 4x oversampled, drawn to 128 px where GalSim's PSF image ends) on five
detectors (SCA 1, 5, 9, 14, 18) at the detector centre and at (512, 512); for each stamp
half-width ``h`` the fraction of a unit-flux point source inside the ``2 h + 1`` square of
detector pixels, averaged over the 16 sub-pixel phases of the source. Prints the mean over the
detectors and positions, and the spread (max - min) that the table's users inherit.

    .venv/bin/python scripts/roman_encircled_energy.py [--bands R062 ...] [--halves 4 ... 20]

Needs galsim (the dev extra). About 1 s per PSF on two cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BANDS = ("R062", "Z087", "Y106", "J129", "H158", "F184", "K213", "W146")
SCAS = (1, 5, 9, 14, 18)
POSITIONS = ((2044, 2044), (512, 512))
OVERSAMP = 4


def main() -> None:
    from orchestrator.dia.pipeline.psf import PsfModel
    from tests.dia.roman_scenes import effective_psf_grid

    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--bands", nargs="+", default=list(BANDS))
    ap.add_argument("--halves", nargs="+", type=int, default=list(range(4, 21)))
    args = ap.parse_args()
    print("ENCIRCLED_ENERGY = {  # band: {stamp half-width px: mean fraction}  (spread)")
    for band in args.bands:
        table = {h: [] for h in args.halves}
        for sca in SCAS:
            for x, y in POSITIONS:
                # samples x oversamp^2 = flux fraction per native pixel (unit total flux)
                model = PsfModel(effective_psf_grid(sca, band, x, y, OVERSAMP, 128), OVERSAMP)
                for h in args.halves:
                    table[h].append(model.enclosed(h))
        means = ", ".join(f"{h}: {np.mean(v):.4f}" for h, v in table.items())
        spread = max(np.ptp(v) for v in table.values())
        print(f'    "{band}": {{{means}}},  # spread <= {spread:.4f}', flush=True)
    print("}")


if __name__ == "__main__":
    main()
