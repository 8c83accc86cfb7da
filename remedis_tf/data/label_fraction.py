"""Nested, patient-level, stratified label-fraction subsets of a labelled manifest.

Data-efficiency experiments retrain on 1 %, 2 %, 5 %, … of a labelled set. To compare
fractions fairly the subsets are:

* **patient-level** – a patient's images are all in or all out (no leakage of one patient
  between the subset and the rest, and bootstrap CIs stay honest);
* **stratified** – each patient gets one stratum: its *rarest positive label* (the label,
  among those the patient is positive for, that the fewest patients in the manifest are
  positive for; ties go to the earlier label), or "no positive label". Multi-class
  patients have a single class, so their stratum is their class. The rarest positive was
  chosen over the full positive pattern because with K labels the pattern makes up to 2^K
  tiny strata, and the one-patient-per-stratum floor would then inflate small fractions;
  the rarest label keeps rare classes represented with at most K+1 strata.
* **nested** – for one seed, every patient gets one seeded rank inside its stratum, and a
  fraction f takes the first ``ceil(f * n_s)`` patients of each stratum of size ``n_s``.
  So the subset for f1 < f2 is contained in the subset for f2 (and for ``per_class``
  counts c1 < c2 alike). The rank depends on the sorted patient keys, not on file order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Tuple

import numpy as np

from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError, DataError

NO_POSITIVE = "(no positive label)"


def _check_labelled(manifest: Manifest) -> None:
  if manifest.task == "unlabelled" or manifest.num_labels == 0:
    raise DataError(f"manifest {manifest.source or '<unnamed>'} has no labels; "
                    "label-fraction subsets need a labelled manifest")
  if len(manifest) == 0:
    raise DataError(f"manifest {manifest.source or '<unnamed>'} is empty")


def _patient_positives(manifest: Manifest):
  """(patient keys sorted, record indices per patient, bool [P, K] positive matrix)."""
  groups = manifest.by_patient()
  keys = sorted(groups)
  labels = manifest.label_matrix()
  used = manifest.mask_matrix() > 0
  positive = (labels == 1) & used
  per_patient = np.stack([positive[groups[k]].any(0) for k in keys])
  return keys, groups, per_patient


def _strata(per_patient: np.ndarray) -> np.ndarray:
  """Stratum id per patient: its rarest positive label, or K when it has none."""
  num_patients, num_labels = per_patient.shape
  prevalence = per_patient.sum(0)
  # Absent labels get a cost above any prevalence, so argmin picks the rarest positive.
  cost = np.where(per_patient, prevalence[None, :], num_patients + 1)
  stratum = cost.argmin(1)
  stratum[~per_patient.any(1)] = num_labels
  return stratum


def _validate_request(fraction, per_class) -> None:
  if (fraction is None) == (per_class is None):
    raise ConfigError("give exactly one of fraction / per_class "
                      f"(got fraction={fraction!r}, per_class={per_class!r})")
  if fraction is not None:
    ok = (isinstance(fraction, (int, float, np.floating, np.integer))
          and not isinstance(fraction, bool) and math.isfinite(float(fraction)))
    if not ok or not 0.0 < float(fraction) <= 1.0:
      raise ConfigError(f"label fraction must be in (0, 1], got {fraction!r}")
  if per_class is not None:
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) \
        or per_class < 1:
      raise ConfigError(f"per_class must be a positive integer, got {per_class!r}")


def select_fraction(manifest: Manifest, fraction: Optional[float] = None,
                    per_class: Optional[int] = None, seed: int = 0,
                    stratify: bool = True) -> Manifest:
  """Seeded, nested, patient-level subset of a labelled manifest.

  Args:
    manifest: labelled manifest (multilabel, multiclass or binary).
    fraction: in (0, 1]: each stratum keeps ``ceil(fraction * patients_in_stratum)``
      patients (at least one per non-empty stratum), so the subset holds about
      ``fraction`` of the patients (and of the images).
    per_class: instead of a fraction, keep this many patients per stratum (all of a
      stratum that is smaller). Exactly one of ``fraction`` / ``per_class``.
    seed: selects the patient ranking; one seed gives nested subsets across fractions.
    stratify: if False all patients form a single stratum.

  Returns:
    A manifest with the selected records in their original order; its ``source`` gains a
    ``[fraction=… seed=…]`` suffix.

  Raises:
    ConfigError: bad fraction/per_class, or a subset that leaves a label with positive
      examples in the manifest without any positive example.
    DataError: unlabelled or empty manifest.
  """
  _validate_request(fraction, per_class)
  _check_labelled(manifest)
  keys, groups, per_patient = _patient_positives(manifest)
  num_patients = len(keys)
  strata = _strata(per_patient) if stratify else np.zeros(num_patients, np.int64)
  rank = np.random.default_rng(seed).permutation(num_patients)

  chosen: List[int] = []
  for s in np.unique(strata):
    members = np.flatnonzero(strata == s)
    members = members[np.argsort(rank[members], kind="stable")]
    if fraction is not None:
      # The tiny slack keeps e.g. 0.1 * 30 = 3.0000000000000004 from rounding up to 4.
      take = max(1, math.ceil(float(fraction) * members.size - 1e-9))
    else:
      take = int(per_class)
    chosen.extend(members[:take].tolist())

  picked = np.zeros(num_patients, bool)
  picked[chosen] = True
  lost = per_patient.any(0) & ~per_patient[picked].any(0)
  what = f"fraction={fraction}" if fraction is not None else f"per_class={per_class}"
  if lost.any():
    name = manifest.label_names[int(np.flatnonzero(lost)[0])]
    raise ConfigError(f"{what} (seed {seed}) leaves class {name!r} with no positive example; "
                      "use a larger fraction" + ("" if stratify else " or stratify=True"))
  indices = sorted(i for p in np.flatnonzero(picked) for i in groups[keys[p]])
  return manifest.subset(indices, source_suffix=f"[{what} seed={seed}]")


def holdout_split(manifest: Manifest, fraction: float, seed: int = 0
                  ) -> Tuple[Manifest, Manifest]:
  """``(rest, held_out)``: a stratified, patient-level ``fraction`` of ``manifest`` held
  out (e.g. a validation split made once for a new site), and the other patients.

  The held-out patients are :func:`select_fraction`'s for ``(fraction, seed)``; both parts
  keep the original record order and no patient is in both. Label fractions of the rest
  (:func:`select_fraction` on ``rest``) are then nested and never touch the held-out set.
  """
  held = select_fraction(manifest, fraction, seed=seed)
  held_ids = {r.example_id for r in held.records}
  rest = [i for i, r in enumerate(manifest.records) if r.example_id not in held_ids]
  if not rest:
    raise ConfigError(f"holding out {fraction} of {manifest.source} leaves no patients")
  return (manifest.subset(rest, source_suffix=f"[without held-out {fraction:g} seed={seed}]"),
          dataclasses.replace(held, source=manifest.source +
                              f"[held-out {fraction:g} seed={seed}]"))
