"""The PhotometryBatch manifest's ``spec``: which supernovae, measured how, written where.

Paths may start with ``~`` and contain ``$VAR``, ``${VAR}`` and ``${VAR:-default}``; they are
expanded when the task runs (``paths.expand``). A relative list path or list pattern is read
against the object table's folder, as ``photometry run`` reads image paths against their
list's folder.
"""

from __future__ import annotations

import string
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from orchestrator.manifests.fields import Argv, Container, StrictModel
from orchestrator.manifests.models import ManifestBase

PATTERN_FIELDS = ("oid", "band")
OID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
BAND_PATTERN = r"^[A-Za-z0-9]+$"
DEFAULT_OUTPUT_DIR = "${XDG_DATA_HOME:-~/.local/share}/orchestrator/photometry"
DEFAULT_SCRATCH_DIR = "${TMPDIR:-/tmp}"

PathText = Annotated[str, Field(min_length=1)]
Oid = Annotated[str, Field(pattern=OID_PATTERN)]
Band = Annotated[str, Field(pattern=BAND_PATTERN)]


def _check_pattern(value: str | None) -> str | None:
    """A list path may name ``{oid}`` and ``{band}``, nothing else, in str.format's syntax."""
    if value is None:
        return value
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid pattern: {exc}") from None
    unknown = sorted({n for n in names if n not in PATTERN_FIELDS})
    if unknown:
        raise ValueError(
            f"{value!r} names {', '.join('{' + n + '}' for n in unknown)}; a list path may "
            "name only {oid} and {band}"
        )
    return value


class ObjectEntry(StrictModel):
    """One supernova: where it is, in which bands, and its image lists (else the spec's)."""

    oid: Oid = Field(description="object id: names its output folder and files")
    ra: float = Field(ge=0.0, lt=360.0, description="right ascension, degrees")
    dec: float = Field(ge=-90.0, le=90.0, description="declination, degrees")
    band: list[Band] | None = Field(
        None, description="bands to measure (default: spec.bands); one band may be a string"
    )
    templates: PathText | None = Field(None, description="template list (default: spec's)")
    science: PathText | None = Field(None, description="science list (default: spec's)")

    @field_validator("band", mode="before")
    @classmethod
    def _one_band(cls, value: object) -> object:
        if isinstance(value, str):
            return [b for b in value.replace(",", " ").split() if b]
        return value

    @field_validator("templates", "science")
    @classmethod
    def _patterns(cls, value: str | None) -> str | None:
        return _check_pattern(value)


class BuiltinPipeline(StrictModel):
    """Our DIA core (``photometry run``), one process per task."""

    backend: Literal["auto", "gpu", "cpu"] = Field(
        "auto", description="auto: the GPU when CuPy sees one, else the CPU (Numba)"
    )
    cutout: int = Field(
        512, ge=0, description="cutout side in pixels around the object; 0: whole frames"
    )
    kernel_half_width: int | None = Field(None, ge=1, description="default: photometry run's")
    psf_wings: Literal["model", "stars"] | None = Field(
        None, description="default: photometry run's"
    )
    nprocs: int = Field(1, ge=1, description="image pairs in parallel inside one task (-p)")
    group: bool = Field(
        True,
        description="objects whose lists name the same images are measured together: one "
        "subtraction per image pair (whole frames, or one cutout covering objects within half "
        "a cutout of each other)",
    )


class PhrostyPaths(StrictModel):
    """Where phrosty writes inside its container (the paths its config file names): each task
    mounts its own folders there, so parallel tasks never share a temporary folder."""

    lc_out: str = Field("/lc_out_dir", pattern=r"^/[^:]*$", description="light curves")
    dia_out: str = Field("/dia_out_dir", pattern=r"^/[^:]*$", description="difference images")
    temp: str = Field("/phrosty_temp", pattern=r"^/[^:]*$", description="temporary files")


class PhrostyPipeline(StrictModel):
    """The Roman SN PIT's phrosty pipeline in its (GPU) container, one container run per task:
    ``COMMAND --oid OID -oc OC -b BAND -r RA -d DEC -ic IC -t LIST -s LIST -p N -w N ARGS`` with
    ``SNPIT_CONFIG`` set, rendered by the shared container module (runtime, image, mounts, env,
    extra_args as for a Command's ``container``)."""

    container: Container = Field(
        description="runtime (podman-hpc, shifter, podman, apptainer), image, mounts (the image "
        "collections), env, extra_args (e.g. ['--gpu'])"
    )
    command: Argv = Field(
        default_factory=lambda: ["python", "phrosty/pipeline.py"],
        description="phrosty's entry point inside the container",
    )
    workdir: str | None = Field(None, description="working directory inside the container")
    config: PathText = Field(
        description="phrosty's config file, inside the container (SNPIT_CONFIG)"
    )
    object_collection: str = Field("ou2024", pattern=r"^\S+$", description="-oc")
    image_collection: str = Field("ou2024", pattern=r"^\S+$", description="-ic")
    nprocs: int = Field(3, ge=1, description="-p: CPU processes (about 3-6 GB each)")
    nwrite: int = Field(3, ge=1, description="-w: writer processes")
    args: list[str] = Field(default_factory=list, description="further phrosty arguments")
    images_root: PathText | None = Field(
        None,
        description="the host folder the lists' image paths are relative to (the image "
        "collection's mount source): when set, every image is checked before the batch runs",
    )
    paths: PhrostyPaths = Field(default_factory=PhrostyPaths)


class Pipeline(StrictModel):
    """How each object is measured: ``builtin`` (our DIA core), or ``phrosty`` when set (then
    ``builtin`` measures only on a stalled GPU queue's fallback resources, on the CPU)."""

    builtin: BuiltinPipeline = Field(default_factory=BuiltinPipeline)
    phrosty: PhrostyPipeline | None = None


class PhotometryBatchSpec(StrictModel):
    """Many supernovae measured as one batch; results per object and per batch."""

    objects: PathText | list[ObjectEntry] = Field(
        description="a table (CSV or Parquet with columns oid, ra, dec and optionally band, "
        "templates, science; or a YAML list of such mappings), or the list itself inline"
    )
    bands: list[Band] = Field(
        default_factory=lambda: ["R062"], min_length=1, description="bands of objects without"
    )
    templates: PathText | None = Field(
        None, description="template list of every object, a pattern with {oid} and {band}"
    )
    science: PathText | None = Field(
        None, description="science list of every object, a pattern with {oid} and {band}"
    )
    pipeline: Pipeline = Field(default_factory=Pipeline)
    parallel: int = Field(
        2, ge=1, description="tasks at once on the local executor (a bounded process pool)"
    )
    output_dir: PathText = Field(
        DEFAULT_OUTPUT_DIR,
        description="results go to OUTPUT_DIR/JOB/RUN_ID/ (per object and per batch); never "
        "the state directory",
    )
    scratch_dir: PathText = Field(
        DEFAULT_SCRATCH_DIR,
        description="each task's temporary files go to SCRATCH_DIR/orchestrator-UID/JOB/"
        "RUN_ID/TASK/, removed when the task ends",
    )
    recompute: bool = Field(
        False,
        description="measure every object again, even one whose inputs and settings did not "
        "change since its last success",
    )

    @field_validator("templates", "science")
    @classmethod
    def _patterns(cls, value: str | None) -> str | None:
        return _check_pattern(value)

    @model_validator(mode="after")
    def _inline_objects_have_lists(self) -> PhotometryBatchSpec:
        if isinstance(self.objects, list):
            seen: set[str] = set()
            for i, entry in enumerate(self.objects):
                if entry.oid in seen:
                    raise ValueError(f"objects[{i}]: oid {entry.oid!r} appears twice")
                seen.add(entry.oid)
                for which in ("templates", "science"):
                    if getattr(entry, which) is None and getattr(self, which) is None:
                        raise ValueError(
                            f"objects[{i}] ({entry.oid}) has no {which} list and spec.{which} "
                            "is not set"
                        )
        return self


class PhotometryBatchManifest(ManifestBase):
    kind: Literal["PhotometryBatch"]
    spec: PhotometryBatchSpec
