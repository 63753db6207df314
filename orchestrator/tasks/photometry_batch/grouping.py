"""Which tasks are measured together: objects on the same images, subtracted once per pair.

Two tasks are candidates when their lists name the same images in the same band (``Task.images``:
a digest of them). With whole frames (``cutout: 0``) all candidates form one group: one
subtraction of each whole pair serves them all. With cutouts, candidates are clustered so that
every two objects of a group lie within half a cutout of each other (in the first science
image's pixels): the group's cutout, which covers them all, is then at most twice the usual
side, cheaper than two cutouts' subtractions; objects farther apart are measured apart. A group
holds at most :data:`GROUP_MAX` objects (a batch system's array task each: groups keep the
batch parallel). phrosty measures one object per container run: no groups.
"""

from __future__ import annotations

import math
from pathlib import Path

from orchestrator.tasks.photometry_batch.plan import Task
from orchestrator.tasks.photometry_batch.spec import PhotometryBatchSpec

GROUP_MAX = 16
ROMAN_PIXEL_DEG = 0.11 / 3600  # when the first image's WCS cannot be read


def group_tasks(tasks: list[Task], spec: PhotometryBatchSpec) -> list[list[int]]:
    """The task indices of each group, in the order of their first task."""
    builtin = spec.pipeline.builtin
    if spec.pipeline.phrosty is not None or not builtin.group:
        return [[i] for i in range(len(tasks))]
    candidates: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        candidates.setdefault(task.images or task.key, []).append(i)
    groups: list[list[int]] = []
    for members in candidates.values():
        if builtin.cutout == 0:
            groups += [members[k : k + GROUP_MAX] for k in range(0, len(members), GROUP_MAX)]
            continue
        limit = builtin.cutout / 2 * _pixel_deg(tasks[members[0]])
        groups += _clusters([tasks[i] for i in members], members, limit)
    return sorted(groups, key=lambda g: g[0])


def _clusters(tasks: list[Task], indices: list[int], limit_deg: float) -> list[list[int]]:
    """Greedy: each object joins the first group whose every member is within ``limit_deg``."""
    clusters: list[list[int]] = []
    members: list[list[Task]] = []
    for task, index in zip(tasks, indices, strict=True):
        for cluster, those in zip(clusters, members, strict=True):
            if len(cluster) < GROUP_MAX and all(_sep_deg(task, o) <= limit_deg for o in those):
                cluster.append(index)
                those.append(task)
                break
        else:
            clusters.append([index])
            members.append([task])
    return clusters


def _sep_deg(a: Task, b: Task) -> float:
    """Angular separation (small-angle, plenty for a few arcminutes)."""
    dra = (a.ra - b.ra + 180.0) % 360.0 - 180.0
    return math.hypot(dra * math.cos(math.radians((a.dec + b.dec) / 2)), a.dec - b.dec)


def _pixel_deg(task: Task) -> float:
    """The pixel size of the task's first science image, from its WCS."""
    try:
        from astropy.io import fits
        from astropy.wcs import WCS
        from astropy.wcs.utils import proj_plane_pixel_scales

        from orchestrator.dia.io import read_list

        first = read_list(Path(task.science), task.band)[0].path
        with fits.open(first, memmap=False) as hdul:
            hdu = next((h for h in hdul if h.header.get("CTYPE1")), hdul[0])
            scales = proj_plane_pixel_scales(WCS(hdu.header).celestial)
        return float(max(scales))
    except Exception:  # an unreadable image fails its task later, with its own message
        return ROMAN_PIXEL_DEG
