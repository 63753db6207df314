"""A synthetic Roman-like data set with a known supernova light curve, to run the pipeline anywhere.

The sky: stars (log-uniform fluxes), a host galaxy (two circular Gaussian components) and a
supernova offset from its centre with a Bazin (2009) light curve. Each exposure has its own
pointing (dither of up to ``dither_px``, rotation up to ``rotation_deg``), PSF (a double Gaussian,
core FWHM 1.2-1.8 pixels: undersampled, as Roman's is), throughput (zero point), sky level with a
gradient, Gaussian noise with the exact variance (written as ERR), and a few hot pixels and a bad
column flagged in DQ. Every profile is integrated over the pixels exactly (error functions), and
the PSF images of the ``psf`` column are the same model on a grid oversampled 4 times, so the
pipeline's PSF and resampling code is checked against an independent rendering.

Layout under ``out``: ``images/*.fits``, ``psf/*.fits``, ``templates.txt``, ``science.txt``
(phrosty's list format with a ``psf`` column, paths relative to ``out``), ``truth.csv`` (per
science image: mjd, true flux in that image's units, true magnitude) and ``object.json``
(oid, ra, dec, band).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import erf

from orchestrator.dia.io import write_list

PIXEL_SCALE_ARCSEC = 0.11
ZP_PHYSICAL = 26.0  # magnitude of one e- in the physical flux unit
OVERSAMP = 4
PSF_HALF_PX = 12
HALO_WEIGHT = 0.15
HALO_SCALE = 3.0


@dataclass(frozen=True)
class Exposure:
    name: str
    kind: str  # "template" | "science"
    mjd: float
    pointing: int
    sca: int
    crval: tuple[float, float]
    rotation_deg: float
    core_sigma_px: float
    throughput: float  # image units per e-
    sky_e: float
    sn_flux_e: float


def bazin(
    t: np.ndarray | float, t0: float, peak: float, rise: float = 5.0, fall: float = 25.0
) -> Any:
    """Bazin et al. (2009) light curve scaled so that its maximum is ``peak``."""
    tt = np.linspace(t0 - 5 * rise, t0 + 5 * rise, 2001)
    shape = np.exp(-(tt - t0) / fall) / (1 + np.exp(-(tt - t0) / rise))
    norm = float(shape.max())
    t = np.asarray(t, dtype=float)
    return peak * np.exp(-(t - t0) / fall) / (1 + np.exp(-(t - t0) / rise)) / norm


def _profile_1d(edges: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    s2 = math.sqrt(2) * sigma
    return np.asarray(np.diff(erf((edges - centre) / s2)) / 2)


def _add_gaussian(img: np.ndarray, x: float, y: float, flux: float, sigma: float) -> None:
    """Add a pixel-integrated circular Gaussian at ``(x, y)`` (x = column) to ``img``."""
    half = math.ceil(6 * sigma) + 1
    ix, iy = math.floor(x + 0.5), math.floor(y + 0.5)
    r0, r1 = max(0, iy - half), min(img.shape[0], iy + half + 1)
    c0, c1 = max(0, ix - half), min(img.shape[1], ix + half + 1)
    if r1 <= r0 or c1 <= c0:
        return
    py = _profile_1d(np.arange(r0, r1 + 1) - 0.5, y, sigma)
    px = _profile_1d(np.arange(c0, c1 + 1) - 0.5, x, sigma)
    img[r0:r1, c0:c1] += flux * np.outer(py, px)


def _add_source(
    img: np.ndarray, x: float, y: float, flux: float, core: float, extra_sigma: float = 0.0
) -> None:
    """A point source (no ``extra_sigma``) or a Gaussian blob, through the double-Gaussian PSF."""
    for w, s in ((1 - HALO_WEIGHT, core), (HALO_WEIGHT, HALO_SCALE * core)):
        _add_gaussian(img, x, y, flux * w, math.hypot(s, extra_sigma))


def psf_image(core_sigma_px: float) -> np.ndarray:
    """The instrumental PSF on a grid oversampled ``OVERSAMP`` times (odd size, centred, sum 1)."""
    n = 2 * PSF_HALF_PX * OVERSAMP + 1
    edges = (np.arange(n + 1) - n / 2) / OVERSAMP  # in pixels, bin centres at multiples of 1/4
    img = np.zeros((n, n))
    for w, s in ((1 - HALO_WEIGHT, core_sigma_px), (HALO_WEIGHT, HALO_SCALE * core_sigma_px)):
        p = _profile_1d(edges, 0.0, s)
        img += w * np.outer(p, p)
    return np.asarray(img / img.sum())


def make_wcs(crval: tuple[float, float], rotation_deg: float, size: int) -> Any:
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
    th = math.radians(rotation_deg)
    s = PIXEL_SCALE_ARCSEC / 3600
    w.wcs.cd = np.array(
        [[-s * math.cos(th), s * math.sin(th)], [s * math.sin(th), s * math.cos(th)]]
    )
    return w


def simulate(
    out: Path,
    *,
    size: int = 1024,
    epochs: int = 8,
    n_templates: int = 2,
    seed: int = 0,
    band: str = "R062",
    oid: str = "20172782",
    sn_peak_e: float = 6000.0,
    star_density_per_mpx: float = 600.0,
    dither_px: float = 20.0,
    rotation_deg: float = 4.0,
    companions: int = 0,
) -> dict[str, Any]:
    """Write the data set under ``out``; returns the object's description (as object.json).

    ``companions`` (at most 3): further supernovae on the same images, 50-70 px from the
    object, each with its own light curve (``truth-OID.csv``), listed in object.json under
    ``companions``; no random draw depends on them, so the rest of the scene is the same."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "psf").mkdir(parents=True, exist_ok=True)
    ra0, dec0 = 9.5, -44.0
    ref = make_wcs((ra0, dec0), 0.0, size)
    centre = (size - 1) / 2
    # sources on the reference grid, over a larger area than one image (dithers, rotations)
    span = size * 1.6
    n_stars = int(star_density_per_mpx * span**2 / 1e6)
    sx = rng.uniform(centre - span / 2, centre + span / 2, n_stars)
    sy = rng.uniform(centre - span / 2, centre + span / 2, n_stars)
    sflux = np.exp(rng.uniform(np.log(300.0), np.log(3e5), n_stars))
    obj_x, obj_y = centre + 3.3, centre - 2.7
    comps = [
        (f"{oid}-{k + 1}", obj_x + dx, obj_y + dy, frac, dt)
        for k, (dx, dy, frac, dt) in enumerate(COMPANIONS[: max(0, companions)])
    ]
    # keep stars off the objects (a star on a supernova is not what this data set tests)
    far = _far_from(sx, sy, [(obj_x, obj_y)] + [(c[1], c[2]) for c in comps])
    sx, sy, sflux = sx[far], sy[far], sflux[far]
    star_ra, star_dec = ref.all_pix2world(sx, sy, 0)
    host_ra, host_dec = ref.all_pix2world([obj_x - 4.0], [obj_y - 2.5], 0)
    obj_ra, obj_dec = (float(v[0]) for v in ref.all_pix2world([obj_x], [obj_y], 0))
    comp_sky: list[tuple[str, float, float, float, float]] = []
    for c, cx, cy, frac, dt in comps:
        c_ra, c_dec = (float(v[0]) for v in ref.all_pix2world([cx], [cy], 0))
        comp_sky.append((c, c_ra, c_dec, frac, dt))
    host = ((8000.0, 1.2), (20000.0, 3.5))  # (flux e-, sigma px): bulge, disc

    t0 = 60200.0
    exposures: list[Exposure] = [
        _exposure(
            rng,
            f"template_{i:02d}",
            "template",
            t0 - 300 - 7 * i,
            1000 + i,
            ra0,
            dec0,
            dither_px,
            rotation_deg,
            0.0,
        )
        for i in range(n_templates)
    ]
    mjds = np.linspace(t0 - 12, t0 + 70, epochs)
    for i, m in enumerate(mjds):
        exposures.append(
            _exposure(
                rng,
                f"science_{i:02d}",
                "science",
                float(m),
                2000 + i,
                ra0,
                dec0,
                dither_px,
                rotation_deg,
                float(bazin(m, t0, sn_peak_e)),
            )
        )
    truth_rows = []
    comp_truth: dict[str, list[dict[str, Any]]] = {}
    list_rows: dict[str, list[dict[str, Any]]] = {"template": [], "science": []}
    for e in exposures:
        wcs = make_wcs(e.crval, e.rotation_deg, size)
        img = np.zeros((size, size))
        px, py = wcs.all_world2pix(star_ra, star_dec, 0)
        inside = (px > -20) & (px < size + 20) & (py > -20) & (py < size + 20)
        for x, y, f in zip(px[inside], py[inside], sflux[inside], strict=True):
            _add_source(img, float(x), float(y), float(f), e.core_sigma_px)
        hx, hy = (float(v[0]) for v in wcs.all_world2pix(host_ra, host_dec, 0))
        for f, s in host:
            _add_source(img, hx, hy, f, e.core_sigma_px, s)
        ox, oy = (float(v) for v in wcs.all_world2pix([[obj_ra, obj_dec]], 0)[0])
        if e.sn_flux_e > 0:
            _add_source(img, ox, oy, e.sn_flux_e, e.core_sigma_px)
        if e.kind == "science":
            _add_companions(img, wcs, e, comp_sky, t0, sn_peak_e)
        yy, xx = np.mgrid[:size, :size]
        sky = e.sky_e * (1 + 0.05 * (xx - centre) / size - 0.03 * (yy - centre) / size)
        read_e = 8.0
        var_e = img + sky + read_e**2
        noisy_e = img + sky + rng.normal(size=img.shape) * np.sqrt(var_e)
        dq = np.zeros((size, size), dtype=np.uint32)
        n_hot = max(3, size * size // 20000)
        hy_, hx_ = rng.integers(0, size, n_hot), rng.integers(0, size, n_hot)
        noisy_e[hy_, hx_] = 6e4
        dq[hy_, hx_] = 1
        col = int(rng.integers(size // 8, size - size // 8))
        if abs(col - ox) > 15:  # a bad column away from the object
            noisy_e[: size // 2, col] = 0.0
            dq[: size // 2, col] = 4
        sci = noisy_e * e.throughput
        err = np.sqrt(var_e) * e.throughput
        zpt = ZP_PHYSICAL + 2.5 * math.log10(e.throughput)
        hdr = wcs.to_header()
        primary = fits.PrimaryHDU()
        for h in (primary.header, hdr):
            h["ZPTMAG"] = (zpt, "mag = ZPTMAG - 2.5 log10(flux in image units)")
            h["MJD-OBS"] = e.mjd
            h["FILTER"] = band
            h["POINTING"] = e.pointing
            h["SCA"] = e.sca
        hdul = fits.HDUList(
            [
                primary,
                fits.ImageHDU(sci.astype(np.float32), header=hdr, name="SCI"),
                fits.ImageHDU(err.astype(np.float32), header=hdr, name="ERR"),
                fits.ImageHDU(dq, header=hdr, name="DQ"),
            ]
        )
        image_rel = f"images/{e.name}.fits"
        hdul.writeto(out / image_rel, overwrite=True)
        psf_rel = f"psf/{e.name}_psf.fits"
        ph = fits.PrimaryHDU(psf_image(e.core_sigma_px).astype(np.float64))
        ph.header["OVERSAMP"] = (OVERSAMP, "samples per detector pixel")
        ph.header["PIXCONV"] = (False, "not convolved with the detector pixel")
        ph.writeto(out / psf_rel, overwrite=True)
        list_rows[e.kind].append(list_row(image_rel, e.pointing, e.sca, e.mjd, band, psf_rel))
        if e.kind == "science":
            for c, _, _, frac, dt in comp_sky:
                flux_e = float(bazin(e.mjd, t0 + dt, sn_peak_e * frac))
                comp_truth.setdefault(c, []).append(_truth_row(e, image_rel, zpt, flux_e))
            true_flux = e.sn_flux_e * e.throughput
            truth_rows.append(
                {
                    "mjd": f"{e.mjd:.5f}",
                    "science_path": image_rel,
                    "true_flux": true_flux,
                    "true_mag": (zpt - 2.5 * math.log10(true_flux)) if true_flux > 0 else math.nan,
                    "zpt": zpt,
                    "true_flux_e": e.sn_flux_e,
                }
            )
    obj = {"oid": oid, "ra": obj_ra, "dec": obj_dec, "band": band, "size": size, "seed": seed}
    _write_companions(out, obj, comp_sky, comp_truth)
    write_data_set(out, list_rows, truth_rows, obj)
    return obj


# companions' (offset x, offset y in reference pixels, peak as a fraction of the object's,
# peak time after the object's in days)
COMPANIONS = ((45.0, 38.0, 0.7, 15.0), (-52.0, 41.0, 1.3, -8.0), (36.0, -57.0, 0.5, 30.0))


def _write_companions(
    out: Path,
    obj: dict[str, Any],
    comp_sky: list[tuple[str, float, float, float, float]],
    comp_truth: dict[str, list[dict[str, Any]]],
) -> None:
    """The companions in object.json's ``companions``, each truth in ``truth-OID.csv``."""
    if not comp_sky:
        return
    obj["companions"] = [
        {"oid": c, "ra": c_ra, "dec": c_dec, "truth": f"truth-{c}.csv"}
        for c, c_ra, c_dec, _, _ in comp_sky
    ]
    for c, rows in comp_truth.items():
        _write_truth(out / f"truth-{c}.csv", rows)


def _far_from(sx: np.ndarray, sy: np.ndarray, points: list[tuple[float, float]]) -> np.ndarray:
    far = np.ones(sx.shape, dtype=bool)
    for px, py in points:
        far &= np.hypot(sx - px, sy - py) > 25
    return far


def _add_companions(
    img: np.ndarray,
    wcs: Any,
    e: Exposure,
    comp_sky: list[tuple[str, float, float, float, float]],
    t0: float,
    sn_peak_e: float,
) -> None:
    for _, c_ra, c_dec, frac, dt in comp_sky:
        x, y = (float(v) for v in wcs.all_world2pix([[c_ra, c_dec]], 0)[0])
        _add_source(img, x, y, float(bazin(e.mjd, t0 + dt, sn_peak_e * frac)), e.core_sigma_px)


def _truth_row(e: Exposure, image_rel: str, zpt: float, flux_e: float) -> dict[str, Any]:
    true_flux = flux_e * e.throughput
    return {
        "mjd": f"{e.mjd:.5f}",
        "science_path": image_rel,
        "true_flux": true_flux,
        "true_mag": (zpt - 2.5 * math.log10(true_flux)) if true_flux > 0 else math.nan,
        "zpt": zpt,
        "true_flux_e": flux_e,
    }


def _write_truth(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


LIST_COLUMNS = ("path", "pointing", "sca", "mjd", "band", "psf")


def list_row(path: str, pointing: int, sca: int, mjd: float, band: str, psf: str) -> dict[str, Any]:
    """One row of a ``templates.txt`` / ``science.txt`` list (:data:`LIST_COLUMNS`)."""
    return {
        "path": path,
        "pointing": pointing,
        "sca": sca,
        "mjd": f"{mjd:.5f}",
        "band": band,
        "psf": psf,
    }


def write_data_set(
    out: Path,
    list_rows: dict[str, list[dict[str, Any]]],
    truth_rows: list[dict[str, Any]],
    obj: dict[str, Any],
) -> None:
    """The files `photometry run` reads besides the images: ``templates.txt``,
    ``science.txt`` (phrosty's list columns), ``truth.csv`` (when there are truth rows) and
    ``object.json``. Shared with the GalSim Roman scenes of the tests."""
    write_list(out / "templates.txt", list_rows["template"], LIST_COLUMNS)
    write_list(out / "science.txt", list_rows["science"], LIST_COLUMNS)
    if truth_rows:
        _write_truth(out / "truth.csv", truth_rows)
    (out / "object.json").write_text(json.dumps(obj, indent=2) + "\n")


def _exposure(
    rng: np.random.Generator,
    name: str,
    kind: str,
    mjd: float,
    pointing: int,
    ra0: float,
    dec0: float,
    dither_px: float,
    rotation_deg: float,
    sn_flux_e: float,
) -> Exposure:
    d = rng.uniform(-dither_px, dither_px, 2) * PIXEL_SCALE_ARCSEC / 3600
    crval = (ra0 + d[0] / math.cos(math.radians(dec0)), dec0 + d[1])
    return Exposure(
        name=name,
        kind=kind,
        mjd=mjd,
        pointing=pointing,
        sca=int(rng.integers(1, 19)),
        crval=crval,
        rotation_deg=float(rng.uniform(-rotation_deg, rotation_deg)),
        core_sigma_px=float(rng.uniform(0.5, 0.75)),
        throughput=float(rng.uniform(0.8, 1.2)),
        sky_e=float(rng.uniform(60, 120)),
        sn_flux_e=sn_flux_e,
    )
