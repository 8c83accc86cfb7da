"""Embedded synthetic multi-site chest-radiograph benchmark (a stand-in for real data).

Nothing real can be downloaded in the demo environment, so this package draws a small
benchmark and writes it to disk in the same formats the real readers take: grayscale PNG
files plus CheXpert-style CSV manifests, and an RGB "natural" image set (shapes × colours)
standing in for ImageNet. The images have NO clinical meaning; they only reproduce the
structure of the REMEDIS study (source site with a large unlabelled pool, two shifted
target sites, several images per patient for MICLe, multi-label findings with uncertain
and missing labels).

Layout written under ``out_dir`` (paths inside CSVs are relative to ``out_dir``)::

  site_a/{unlabelled,train,valid,test}.csv   site_b/{train,test}.csv
  site_c/{train,test}.csv                    natural/{train,test}.csv
  benchmark.json
  site_x/<split>/patientNNNNN/study1/view<k>_<frontal|lateral>.png
  natural/<split>/<class_name>/imgNNNNN.png

Everything is a pure function of :class:`SyntheticConfig` (including its seed): the same
config gives byte-identical CSVs and PNGs. See ``data/SYNTHETIC.md`` for how each finding
and each site shift is rendered and the measured sizes and prevalences.

Modules: ``config`` (SyntheticConfig, SiteShift, constants, seed streams), ``chest``
(patient/view sampling, chest rendering, site shifts), ``natural`` (the shapes set),
``raster`` (shared pixel helpers), ``writer`` (generate_benchmark: files, CSVs,
idempotence), ``grid`` (render_case, render_example_grid). Used by the demo, the study
scripts and the tests; no library module depends on it.
"""

from remedis_tf.synthetic.config import (BENCHMARK_FILE, COLOURS, FINDINGS, GENERATOR_VERSION,
                                         MAX_NATURAL_CLASSES, MEDICAL_COLUMNS, NATURAL_COLUMNS,
                                         SHAPES, SUBGROUP_COLUMNS, UNLABELLED_COLUMNS, SiteShift,
                                         SyntheticConfig, natural_class_names)
from remedis_tf.synthetic.grid import render_case, render_example_grid
from remedis_tf.synthetic.writer import generate_benchmark

__all__ = [
    "SyntheticConfig", "SiteShift", "generate_benchmark", "render_case",
    "render_example_grid", "natural_class_names", "GENERATOR_VERSION", "BENCHMARK_FILE",
    "FINDINGS", "SUBGROUP_COLUMNS", "MEDICAL_COLUMNS", "UNLABELLED_COLUMNS",
    "NATURAL_COLUMNS", "SHAPES", "COLOURS", "MAX_NATURAL_CLASSES",
]
