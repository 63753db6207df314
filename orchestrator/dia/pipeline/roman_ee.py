"""The Roman WFI PSF's encircled energy in square stamps, per band (an instrument table).

A PSF estimated from the stars of one image is normalised inside its stamp; Roman's
diffraction wings hold the rest (R062: 2.8 % beyond a 21 x 21 stamp, 1.6 % beyond 41 x 41).
One crowded image cannot measure a 2-3 % wing to the 1 % a light curve needs (a curve of growth
of its few isolated stars scattered by +-3 % on issue 9's scenes, because neighbours and the
background map's local errors enter at that level), so the wing fraction comes from the
instrument model, as HST and JWST photometry take infinite-aperture corrections from the
instrument teams' encircled-energy tables.

Written by ``scripts/roman_encircled_energy.py`` (GalSim 2.8's ``galsim.roman.getPSF`` at the
band's effective wavelength, pixel-convolved, drawn to 128 px; mean over SCAs 1, 5, 9, 14, 18 at
the detector centre and at (512, 512), and over the 16 sub-pixel phases of the source). The
spread over detectors and positions is given per band: it is the table's own uncertainty.
Keys: stamp half-width ``h`` in pixels; values: the flux fraction in the ``2 h + 1`` square.
"""

from __future__ import annotations

ENCIRCLED_ENERGY: dict[str, dict[int, float]] = {
    "R062": {
        4: 0.9204,
        5: 0.9359,
        6: 0.9478,
        7: 0.9566,
        8: 0.9633,
        9: 0.9683,
        10: 0.9720,
        11: 0.9747,
        12: 0.9767,
        13: 0.9783,
        14: 0.9794,
        15: 0.9804,
        16: 0.9812,
        17: 0.9819,
        18: 0.9827,
        19: 0.9835,
        20: 0.9842,
    },  # spread <= 0.0041
    "Z087": {
        4: 0.8951,
        5: 0.9122,
        6: 0.9252,
        7: 0.9360,
        8: 0.9448,
        9: 0.9521,
        10: 0.9579,
        11: 0.9627,
        12: 0.9667,
        13: 0.9697,
        14: 0.9723,
        15: 0.9743,
        16: 0.9759,
        17: 0.9772,
        18: 0.9782,
        19: 0.9791,
        20: 0.9799,
    },  # spread <= 0.0062
    "Y106": {
        4: 0.8796,
        5: 0.8960,
        6: 0.9104,
        7: 0.9215,
        8: 0.9310,
        9: 0.9392,
        10: 0.9462,
        11: 0.9520,
        12: 0.9569,
        13: 0.9610,
        14: 0.9646,
        15: 0.9675,
        16: 0.9700,
        17: 0.9721,
        18: 0.9738,
        19: 0.9752,
        20: 0.9764,
    },  # spread <= 0.0065
    "J129": {
        4: 0.8615,
        5: 0.8808,
        6: 0.8938,
        7: 0.9060,
        8: 0.9161,
        9: 0.9245,
        10: 0.9321,
        11: 0.9388,
        12: 0.9446,
        13: 0.9496,
        14: 0.9540,
        15: 0.9578,
        16: 0.9611,
        17: 0.9641,
        18: 0.9666,
        19: 0.9687,
        20: 0.9706,
    },  # spread <= 0.0088
    "H158": {
        4: 0.8434,
        5: 0.8624,
        6: 0.8787,
        7: 0.8900,
        8: 0.8997,
        9: 0.9094,
        10: 0.9173,
        11: 0.9240,
        12: 0.9304,
        13: 0.9362,
        14: 0.9412,
        15: 0.9457,
        16: 0.9498,
        17: 0.9534,
        18: 0.9567,
        19: 0.9594,
        20: 0.9620,
    },  # spread <= 0.0097
    "F184": {
        4: 0.8112,
        5: 0.8318,
        6: 0.8499,
        7: 0.8687,
        8: 0.8821,
        9: 0.8928,
        10: 0.9030,
        11: 0.9113,
        12: 0.9194,
        13: 0.9264,
        14: 0.9321,
        15: 0.9372,
        16: 0.9418,
        17: 0.9466,
        18: 0.9505,
        19: 0.9534,
        20: 0.9560,
    },  # spread <= 0.0132
    "K213": {
        4: 0.7970,
        5: 0.8182,
        6: 0.8344,
        7: 0.8499,
        8: 0.8668,
        9: 0.8795,
        10: 0.8886,
        11: 0.8981,
        12: 0.9058,
        13: 0.9130,
        14: 0.9200,
        15: 0.9262,
        16: 0.9311,
        17: 0.9356,
        18: 0.9397,
        19: 0.9438,
        20: 0.9479,
    },  # spread <= 0.0152
    "W146": {
        4: 0.8497,
        5: 0.8690,
        6: 0.8846,
        7: 0.8949,
        8: 0.9059,
        9: 0.9149,
        10: 0.9224,
        11: 0.9293,
        12: 0.9356,
        13: 0.9410,
        14: 0.9459,
        15: 0.9502,
        16: 0.9541,
        17: 0.9574,
        18: 0.9603,
        19: 0.9631,
        20: 0.9655,
    },  # spread <= 0.0093
}


def stamp_fraction(band: str, half: int) -> float | None:
    """The fraction of a point source's flux inside a ``2 half + 1`` stamp; None off the table."""
    return ENCIRCLED_ENERGY.get(band.upper(), {}).get(int(half))
