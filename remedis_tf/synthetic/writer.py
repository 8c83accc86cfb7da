"""Writes the benchmark: images, CheXpert-style CSVs and ``benchmark.json``, idempotently.

``generate_benchmark`` draws each split (concurrently; each has its own seed stream),
writes its PNGs and CSV, and records the config and measured sizes/prevalences last in
``benchmark.json``, which is what makes a second call with the same config a no-op.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from remedis_tf import configs, io_utils
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.synthetic.chest import render_split_images, sample_patients, sample_views
from remedis_tf.synthetic.config import (BENCHMARK_FILE, CHUNK, FINDINGS, GENERATOR_VERSION,
                                         MEDICAL_COLUMNS, NATURAL_COLUMNS, SITE_INDEX,
                                         SPLIT_INDEX, SPLITS, UNLABELLED_COLUMNS,
                                         SyntheticConfig, natural_class_names, seed_streams)
from remedis_tf.synthetic.natural import render_natural
from remedis_tf.synthetic.raster import png_bytes, quantise

_OWNED_ENTRIES = ("site_a", "site_b", "site_c", "natural", BENCHMARK_FILE)


def _csv_text(header: Sequence[str], rows: List[Sequence[str]]) -> str:
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(header)
  w.writerows(rows)
  return buf.getvalue()


def _label_text(v: float) -> str:
  return "" if np.isnan(v) else f"{v:.1f}"


def _observed_labels(labels: np.ndarray, rng: np.random.Generator,
                     cfg: SyntheticConfig) -> np.ndarray:
  """float ``[n, 4]``: 1/0 labels with CheXpert-style -1 (uncertain) and NaN (blank).

  Any cell is uncertain with probability ``uncertain_rate``; a negative cell is blank
  ("not mentioned") with probability ``blank_rate``. Positives are never blanked, so
  reading blanks as negatives (CheXpert's convention) adds no label noise.
  """
  obs = labels.astype(np.float64)
  u = rng.random(labels.shape)
  obs[u < cfg.uncertain_rate] = -1.0
  blank = (u >= cfg.uncertain_rate) & (u < cfg.uncertain_rate + cfg.blank_rate) & ~labels
  obs[blank] = np.nan
  return obs


def _sample_demographics(cfg: SyntheticConfig, site: str, split: str,
                         labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Per-patient ``Sex`` ("F"/"M", 1:1) and ``Age`` (years, int in [18, 95]; about 10 years
  older on average with cardiomegaly), from a seed stream of their own."""
  ss = np.random.SeedSequence(entropy=cfg.seed,
                              spawn_key=(SITE_INDEX[site], SPLIT_INDEX[split], 100))
  rng = np.random.Generator(np.random.PCG64(ss))
  n = labels.shape[0]
  sex = np.where(rng.random(n) < 0.5, "F", "M")
  card = labels[:, FINDINGS.index("Cardiomegaly")]
  age = np.clip(np.round(rng.normal(55.0 + 10.0 * card, 15.0)), 18, 95).astype(int)
  return sex, age


def _write_file(path: str, data: bytes) -> None:
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(data)


def _generate_medical_split(out_dir: str, site: str, split: str, first_patient: int,
                            id_width: int, cfg: SyntheticConfig) -> Dict[str, Any]:
  """Draws, renders and writes one split; returns its CSV path and measured summary."""
  shift = cfg.site(site)
  n = getattr(cfg, f"site_{site}_{split}_patients")
  meta_rng, pixel_rng, label_rng = seed_streams(cfg, SITE_INDEX[site], SPLIT_INDEX[split])
  pat = sample_patients(meta_rng, n, shift, cfg)
  views = sample_views(meta_rng, n, cfg)
  labelled = split != "unlabelled"
  obs = (_observed_labels(pat["labels"], label_rng, cfg) if split == "train"
         else pat["labels"].astype(np.float64))
  rel_split = f"site_{site}/{split}"
  rel_paths = []
  for pi, vi, lat in zip(views["patient"], views["view_index"], views["lateral"]):
    pid = f"patient{first_patient + pi:0{id_width}d}"
    rel_paths.append(f"{rel_split}/{pid}/study1/view{vi + 1}_"
                     f"{'lateral' if lat else 'frontal'}.png")
  for d in sorted({os.path.dirname(r) for r in rel_paths}):
    tf.io.gfile.makedirs(os.path.join(out_dir, d))
  sums = np.zeros(2)
  count = 0
  for start, chunk in render_split_images(pat, views, shift, cfg.image_size, pixel_rng):
    sums += [chunk.sum(dtype=np.float64), np.square(chunk, dtype=np.float64).sum()]
    count += chunk.size
    q = quantise(chunk, shift.bit_depth)
    for j in range(len(q)):
      _write_file(os.path.join(out_dir, rel_paths[start + j]), png_bytes(q[j]))
  sex, age = _sample_demographics(cfg, site, split, pat["labels"])
  rows = []
  for p, rel in enumerate(rel_paths):
    pi = views["patient"][p]
    row = [rel, f"patient{first_patient + pi:0{id_width}d}", site.upper(),
           "Lateral" if views["lateral"][p] else "Frontal"]
    if labelled:
      row += [_label_text(v) for v in obs[pi]]
    rows.append(row + [sex[pi], str(age[pi])])
  csv_rel = f"site_{site}/{split}.csv"
  io_utils.atomic_write_text(os.path.join(out_dir, csv_rel),
                             _csv_text(MEDICAL_COLUMNS if labelled else UNLABELLED_COLUMNS,
                                       rows))
  img_labels = pat["labels"][views["patient"]]
  img_obs = obs[views["patient"]]
  mean = sums[0] / count
  summary = {
      "csv": csv_rel, "patients": int(n), "images": len(rel_paths),
      "frontal": int((~views["lateral"]).sum()), "lateral": int(views["lateral"].sum()),
      "patients_with_multiple_images": int((np.bincount(views["patient"]) > 1).sum()),
      "pixel_mean": round(float(mean), 4),
      "pixel_std": round(float(np.sqrt(max(0.0, sums[1] / count - mean ** 2))), 4),
      "bit_depth": shift.bit_depth,
      "patients_by_sex": {k: int((sex == k).sum()) for k in ("F", "M")},
      "age_mean": round(float(age.mean()), 2),
  }
  if labelled:
    known = (img_obs == 0.0) | (img_obs == 1.0)
    summary["prevalence_true"] = {f: round(float(img_labels[:, k].mean()), 4)
                                  for k, f in enumerate(FINDINGS)}
    summary["prevalence_labelled"] = {
        f: round(float((img_obs[:, k] == 1.0).sum() / max(1, known[:, k].sum())), 4)
        for k, f in enumerate(FINDINGS)}
    summary["uncertain_fraction"] = round(float((img_obs == -1.0).mean()), 4)
    summary["blank_fraction"] = round(float(np.isnan(img_obs).mean()), 4)
  return summary


def _generate_natural_split(out_dir: str, split: str, cfg: SyntheticConfig) -> Dict[str, Any]:
  per_class = cfg.natural_train_per_class if split == "train" else cfg.natural_test_per_class
  names = natural_class_names(cfg.natural_classes)
  rng, _, _ = seed_streams(cfg, 9, SPLIT_INDEX[split])
  class_ids = np.tile(np.arange(cfg.natural_classes), per_class)
  rows = []
  for name in names:
    tf.io.gfile.makedirs(os.path.join(out_dir, "natural", split, name))
  size = cfg.natural_size()
  for start in range(0, len(class_ids), CHUNK):
    ids = class_ids[start:start + CHUNK]
    imgs = render_natural(ids, cfg.natural_classes, size, rng)
    for j, cid in enumerate(ids):
      rel = f"natural/{split}/{names[cid]}/img{start + j:05d}.png"
      _write_file(os.path.join(out_dir, rel), png_bytes(imgs[j]))
      rows.append([rel, names[cid]])
  csv_rel = f"natural/{split}.csv"
  io_utils.atomic_write_text(os.path.join(out_dir, csv_rel), _csv_text(NATURAL_COLUMNS, rows))
  return {"csv": csv_rel, "images": len(rows), "classes": len(names)}


def _result(out_dir: str, summary: Dict[str, Any]) -> Dict[str, Any]:
  csvs = {key: os.path.join(out_dir, s["csv"]) for key, s in summary["splits"].items()}
  return {"out_dir": out_dir, "benchmark_json": os.path.join(out_dir, BENCHMARK_FILE),
          "csv": csvs, "summary": summary}


def _existing_summary(out_dir: str, cfg: SyntheticConfig) -> Optional[Dict[str, Any]]:
  """The stored summary if ``out_dir`` holds a complete benchmark for ``cfg``, else None."""
  path = os.path.join(out_dir, BENCHMARK_FILE)
  if not tf.io.gfile.exists(path):
    return None
  try:
    summary = io_utils.read_json(path)
  except (ValueError, tf.errors.OpError):
    return None
  if not isinstance(summary, dict) or "splits" not in summary or configs.config_differences(
      {k: summary.get(k) for k in ("generator_version", "config")},
      configs.jsonable({"generator_version": GENERATOR_VERSION, "config": cfg.to_json_dict()})):
    return None
  for s in summary["splits"].values():
    if not tf.io.gfile.exists(os.path.join(out_dir, s["csv"])):
      return None
  return summary


def generate_benchmark(out_dir: str, config: Optional[SyntheticConfig] = None,
                       num_workers: int = 2) -> Dict[str, Any]:
  """Writes the synthetic benchmark under ``out_dir`` (local or gs://) and describes it.

  Idempotent: when ``out_dir/benchmark.json`` already records this exact config (and
  generator version) nothing is redrawn and the same dict is returned. Otherwise the
  generator-owned entries (``site_a``, ``site_b``, ``site_c``, ``natural``,
  ``benchmark.json``) are deleted first so old and new files never mix; other files in
  ``out_dir`` are left alone. ``benchmark.json`` is written last, so an interrupted run
  is redone from scratch next time. ``num_workers`` threads draw splits concurrently (the
  output does not depend on it).

  Returns:
    ``{"out_dir", "benchmark_json", "csv": {"site_a/train": path, ...}, "summary"}`` where
    ``summary`` is the content of benchmark.json (config, sizes, measured prevalences,
    site shift parameters, natural class names).
  """
  cfg = config or SyntheticConfig()
  if not isinstance(cfg, SyntheticConfig):
    raise ConfigError(f"generate_benchmark: config must be a SyntheticConfig, got "
                      f"{type(cfg).__name__}")
  existing = _existing_summary(out_dir, cfg)
  if existing is not None:
    logging.info("synthetic benchmark in %s is up to date; not regenerating", out_dir)
    return _result(out_dir, existing)
  if tf.io.gfile.exists(out_dir) and not tf.io.gfile.isdir(out_dir):
    raise DataError(f"synthetic benchmark out_dir {out_dir} exists and is not a directory")
  for name in _OWNED_ENTRIES:
    path = os.path.join(out_dir, name)
    if tf.io.gfile.isdir(path):
      tf.io.gfile.rmtree(path)
    elif tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)
  io_utils.ensure_dir(out_dir)
  t0 = time.time()
  counts = [getattr(cfg, f"site_{s}_{sp}_patients") for s, sp in SPLITS]
  id_width = max(5, len(str(sum(counts))))
  firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
  # Every split draws from its own seed streams, so running them concurrently changes
  # nothing in the output; numpy, zlib and file writes release the GIL, so threads help.
  with concurrent.futures.ThreadPoolExecutor(max(1, min(4, num_workers))) as pool:
    jobs = {f"site_{site}/{split}": pool.submit(_generate_medical_split, out_dir, site, split,
                                                first, id_width, cfg)
            for (site, split), first in zip(SPLITS, firsts)}
    jobs.update({f"natural/{split}": pool.submit(_generate_natural_split, out_dir, split, cfg)
                 for split in ("train", "test")})
    splits = {key: job.result() for key, job in jobs.items()}
  summary = {
      "generator_version": GENERATOR_VERSION,
      "seed": cfg.seed,
      "config": cfg.to_json_dict(),
      "findings": list(FINDINGS),
      "medical_columns": list(MEDICAL_COLUMNS),
      "unlabelled_columns": list(UNLABELLED_COLUMNS),
      "natural_columns": list(NATURAL_COLUMNS),
      "natural_classes": list(natural_class_names(cfg.natural_classes)),
      "sites": {s.upper(): dataclasses.asdict(cfg.site(s)) for s in "abc"},
      "label_values": {"positive": "1.0", "negative": "0.0", "uncertain": "-1.0",
                       "not_mentioned": "", "uncertain_and_blank_in": "train splits only"},
      "splits": splits,
  }
  summary = json.loads(json.dumps(summary))
  io_utils.atomic_write_json(os.path.join(out_dir, BENCHMARK_FILE), summary)
  logging.info("synthetic benchmark written to %s in %.1f s", out_dir, time.time() - t0)
  return _result(out_dir, summary)
