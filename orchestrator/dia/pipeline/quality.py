"""Per-row quality of a light curve: the flag bits, their thresholds, and why.

A row's ``flag`` is a bitmask (0 = nothing wrong seen) and ``flag_reason`` says in words which
test failed with its figure. Flagged rows stay in the light curve (a user may still want them);
the plot draws them hollow and grey, and a fit of the light curve should leave them out.

Thresholds, and the reasoning behind each:

- ``CHI2`` (1): the forced-photometry chi2/dof at the object, after outlier clipping in the
  wings, above ``MAX_CHI2_DOF`` = 2. With a right PSF and noise model it is 1 +- 0.05 on a
  31 x 31 stamp; on issue 9's scenes well-measured rows give 0.8-1.3, while a residual of a
  bright star's core or a wrong PSF gives 3-300.
- ``CLIPPED`` (2): outliers left out of the wings carried more than ``MAX_CLIPPED_WEIGHT``
  = 5 % of the fit's information (sum P^2 / V): a neighbour's residual sits on the object, so
  the flux leans on fewer pixels than its error bar assumes.
- ``MASKED`` (4): masked (inpainted) pixels of either image carry more than ``MAX_MASKED_WEIGHT``
  = 5 % of the information: a saturated neighbour, a bad column or a hot pixel on the object.
- ``KERNEL`` (8): the kernel sum differs from the ratio the two zero points predict,
  ``10**(0.4 (zpt_science - zpt_template))``, by more than ``MAX_KERNEL_SUM_ERROR`` = 3 %: the
  subtraction fit absorbed something other than the photometric scale (on the scenes, right
  fits are within 2 %), and residual host light then biases the flux.
"""

from __future__ import annotations

import math

CHI2, CLIPPED, MASKED, KERNEL = 1, 2, 4, 8
NAMES = {CHI2: "chi2", CLIPPED: "clipped", MASKED: "masked", KERNEL: "kernel_sum"}
MAX_CHI2_DOF = 2.0
MAX_CLIPPED_WEIGHT = 0.05
MAX_MASKED_WEIGHT = 0.05
MAX_KERNEL_SUM_ERROR = 0.03


def assess(
    *,
    chi2_dof: float,
    clipped_weight: float,
    masked_weight: float,
    kernel_sum: float,
    zpt_science: float,
    zpt_template: float,
) -> tuple[int, str]:
    """``(flag, reason)`` of one measured row."""
    flag, why = 0, []
    if not chi2_dof <= MAX_CHI2_DOF:
        flag |= CHI2
        why.append(f"forced-photometry chi2/dof {chi2_dof:.2f} > {MAX_CHI2_DOF}")
    if clipped_weight > MAX_CLIPPED_WEIGHT:
        flag |= CLIPPED
        why.append(f"outliers held {clipped_weight:.0%} of the PSF weight")
    if masked_weight > MAX_MASKED_WEIGHT:
        flag |= MASKED
        why.append(f"masked pixels held {masked_weight:.0%} of the PSF weight")
    if math.isfinite(zpt_science) and math.isfinite(zpt_template):
        expected = 10 ** (0.4 * (zpt_science - zpt_template))
        if not abs(kernel_sum / expected - 1) <= MAX_KERNEL_SUM_ERROR:
            flag |= KERNEL
            why.append(f"kernel sum {kernel_sum:.4f}, zero points say {expected:.4f}")
    return flag, "; ".join(why)
