"""absl flags that describe a data source, and their translation into a Manifest.

Every source also takes --{p}validate (none|header|decode: check images before
training), --{p}skip_bad_examples (drop and count bad images instead of failing) and
--{p}dicom_intensity / --{p}dicom_window_center / --{p}dicom_window_width (how grey DICOM
values map to [0, 1]; carried by the Manifest to the pipelines, validation and
make_tfrecords).

Binaries call ``define_data_flags("train_")``, ``define_data_flags("eval_")``, … so one
set of flags per dataset role, then ``manifest_from_flags("train_")``. Sources:

  csv        --{p}csv (+ --{p}data_root, --{p}path_column, --{p}label_columns,
             --{p}task, --{p}patient_column, --{p}view_column, --{p}site_column,
             --{p}id_column, --{p}class_column, --{p}uncertain_policy, --{p}blank_policy)
  chexpert   --{p}csv (train.csv / valid.csv / a CheXpert-style CSV), --{p}data_root,
             --{p}label_columns (default: the 5 competition conditions; pass an empty
             value for unlabelled), --{p}uncertain_policy, --{p}frontal_only
  mimic      --{p}data_root (MIMIC-CXR-JPG root), --{p}mimic_split, label flags as chexpert
  folder     --{p}folder, --{p}folder_labelled (class sub-folders), --{p}patient_regex
  tfrecords  --{p}tfrecords (prefix written by make_tfrecords.py): returns the index
             Manifest (images stay in the shards); every pipeline in
             remedis_tf.data.pipeline reads such a manifest directly
  tfds       --{p}tfds_name, --{p}tfds_split, --{p}tfds_data_dir: no files, so no Manifest;
             use make_tfrecords.py --source=tfds to convert, or tfds_source.load_tfds.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence

from absl import flags

from remedis_tf.data import dicom, folders, recipes, tfrecords, validate
from remedis_tf.data.csv_reader import BLANK_POLICIES, UNCERTAIN_POLICIES
from remedis_tf.data.manifest import Manifest, TASK_TYPES
from remedis_tf.errors import ConfigError

SOURCES = ("csv", "chexpert", "mimic", "folder", "tfrecords", "tfds")


def define_data_flags(prefix: str = "", flag_values: flags.FlagValues = flags.FLAGS,
                      role: str = "") -> None:
  """Registers the data-source flags, each named ``--{prefix}<name>``.

  ``role`` (e.g. "training") only enriches the help strings.
  """
  p = prefix
  what = f" for the {role} data" if role else ""
  fv = flag_values
  flags.DEFINE_enum(f"{p}source", None, list(SOURCES),
                    f"Data source{what}: csv (any CSV), chexpert (CheXpert train/valid.csv or "
                    "a CheXpert-style CSV), mimic (MIMIC-CXR-JPG root), folder (image folders), "
                    "tfrecords (shards from make_tfrecords.py), tfds (TensorFlow Datasets).",
                    flag_values=fv)
  flags.DEFINE_string(f"{p}csv", None, f"CSV manifest{what} (csv/chexpert sources; .csv or "
                      ".csv.gz, local or gs://).", flag_values=fv)
  flags.DEFINE_string(f"{p}data_root", None, "Folder that relative image paths are resolved "
                      "against (default: the CSV's folder); the MIMIC-CXR-JPG root for "
                      "--source=mimic.", flag_values=fv)
  flags.DEFINE_string(f"{p}path_column", "Path", "CSV column with image paths (csv source).",
                      flag_values=fv)
  flags.DEFINE_list(f"{p}label_columns", None, "Comma-separated label columns. chexpert/"
                    "mimic default: Atelectasis,Cardiomegaly,Consolidation,Edema,Pleural "
                    "Effusion; an empty value means unlabelled.", flag_values=fv)
  flags.DEFINE_enum(f"{p}task", None, list(TASK_TYPES), "Task type of a csv source; default: "
                    "inferred (class column → multiclass, 0 label columns → unlabelled, 1 → "
                    "binary, more → multilabel).", flag_values=fv)
  flags.DEFINE_string(f"{p}patient_column", None, "CSV column with the patient/case id "
                      "(MICLe pairs, patient-level splits and CIs use it).", flag_values=fv)
  flags.DEFINE_string(f"{p}view_column", None, "CSV column with the view (e.g. frontal).",
                      flag_values=fv)
  flags.DEFINE_string(f"{p}site_column", None, "CSV column with the acquisition site.",
                      flag_values=fv)
  flags.DEFINE_string(f"{p}id_column", None, "CSV column with a unique example id (default: "
                      "the path as written in the CSV).", flag_values=fv)
  flags.DEFINE_string(f"{p}class_column", None, "CSV column with a class name (multiclass; "
                      "one-hot over the sorted distinct names).", flag_values=fv)
  flags.DEFINE_enum(f"{p}uncertain_policy", "ignore", list(UNCERTAIN_POLICIES),
                    "What a -1 (uncertain) label becomes: ignore (masked out of the loss), "
                    "ones (positive, U-Ones) or zeros (negative, U-Zeros).", flag_values=fv)
  flags.DEFINE_enum(f"{p}blank_policy", "zeros", list(BLANK_POLICIES),
                    "What a blank label cell becomes: zeros (negative; CheXpert's 'not "
                    "mentioned') or ignore (masked out).", flag_values=fv)
  flags.DEFINE_bool(f"{p}frontal_only", False, "chexpert/mimic: keep frontal views only.",
                    flag_values=fv)
  flags.DEFINE_string(f"{p}mimic_split", "train", "mimic: split to read (train, validate, "
                      "test or all).", flag_values=fv)
  flags.DEFINE_string(f"{p}folder", None, "Image folder root (folder source).",
                      flag_values=fv)
  flags.DEFINE_bool(f"{p}folder_labelled", False, "folder: one sub-folder per class "
                    "(multiclass); otherwise every image under the root, unlabelled.",
                    flag_values=fv)
  flags.DEFINE_string(f"{p}patient_regex", None, "folder: regex giving the patient id from "
                      r"the relative path, e.g. 'patient\d+' (group 1 if it has a group).",
                      flag_values=fv)
  flags.DEFINE_string(f"{p}tfrecords", None, "TFRecord prefix written by make_tfrecords.py "
                      "(tfrecords source).", flag_values=fv)
  flags.DEFINE_string(f"{p}tfds_name", None, "TFDS dataset name, e.g. patch_camelyon "
                      "(tfds source; needs pip install 'remedis_tf[tfds]').", flag_values=fv)
  flags.DEFINE_string(f"{p}tfds_split", "train", "TFDS split (tfds source).", flag_values=fv)
  flags.DEFINE_enum(f"{p}validate", "header", ["none", "header", "decode"],
                    f"Check every image{what} before training: header (exists, non-empty, "
                    "known format; fast), decode (fully decodes each file; slow on big sets) "
                    "or none.", flag_values=fv)
  flags.DEFINE_bool(f"{p}skip_bad_examples", False, f"Skip missing/undecodable images{what} "
                    "(counted and reported) instead of failing on the first one. Every "
                    "image is then decoded before training (as --validate=decode), so "
                    "whatever would fail to decode during training is skipped.",
                    flag_values=fv)
  flags.DEFINE_string(f"{p}tfds_data_dir", None, "TFDS data_dir holding the prepared "
                      "dataset (tfds source).", flag_values=fv)
  flags.DEFINE_enum(f"{p}dicom_intensity", "voi", list(dicom.INTENSITY_MODES),
                    f"How grey DICOM values{what} map to [0, 1], after RescaleSlope/"
                    "RescaleIntercept or the Modality LUT and before MONOCHROME1 is inverted: "
                    "voi (the file's VOI LUT, else its first WindowCenter/WindowWidth with its "
                    "VOILUTFunction, as a viewer shows it; files without one use range), range "
                    "(this image's min-max: darkest pixel 0, brightest 1) or bits (the whole "
                    "stored bit range: the behaviour before VOI support, CT/MR then use a few "
                    "% of [0, 1]). Not used by PNG/JPEG files or --{p}source=tfrecords "
                    "(decoded when the shards were written).", flag_values=fv)
  flags.DEFINE_float(f"{p}dicom_window_center", None, f"Explicit DICOM window center{what} "
                     "in modality units (e.g. HU: -600 for lung, 40 for soft tissue); with "
                     f"--{p}dicom_window_width it is used for every grey DICOM, overriding "
                     f"--{p}dicom_intensity and the files' own windows.", flag_values=fv)
  flags.DEFINE_float(f"{p}dicom_window_width", None, "Explicit DICOM window width (>= 1, "
                     "modality units, e.g. HU: 1500 for lung, 400 for soft tissue); give it "
                     f"with --{p}dicom_window_center.", flag_values=fv)


def _need(prefix: str, name: str, fv: flags.FlagValues, source: str) -> str:
  value = fv[f"{prefix}{name}"].value
  if not value:
    raise ConfigError(f"--{prefix}{name} is required with --{prefix}source={source}")
  return value


def source_from_flags(prefix: str = "",
                      flag_values: flags.FlagValues = flags.FLAGS) -> Optional[str]:
  """The chosen ``--{prefix}source`` (None when not given)."""
  return flag_values[f"{prefix}source"].value


def _build_manifest(prefix: str, flag_values: flags.FlagValues,
                    attribute_columns: Sequence[str] = ()) -> Manifest:
  """Builds the Manifest described by the ``--{prefix}*`` flags.

  ``attribute_columns`` are extra columns kept in ``Record.attributes`` (csv, chexpert and
  mimic sources only; the other sources have no columns and raise ConfigError).

  Raises ConfigError for missing/contradictory flags (naming the flag), DataError for bad
  data. For ``tfrecords`` the result is the shard index (``manifest.storage.is_tfrecords``
  is True); for ``tfds`` a ConfigError explains how to convert to TFRecords first.
  """
  fv = flag_values
  p = prefix
  source = fv[f"{p}source"].value
  if source is None:
    raise ConfigError(f"--{p}source is required (one of {', '.join(SOURCES)})")
  labels = fv[f"{p}label_columns"].value
  policies = dict(uncertain_policy=fv[f"{p}uncertain_policy"].value,
                  blank_policy=fv[f"{p}blank_policy"].value)
  attribute_columns = tuple(attribute_columns)
  if attribute_columns and source not in ("csv", "chexpert", "mimic"):
    raise ConfigError(f"--{p}source={source} has no columns to read {attribute_columns[0]!r} "
                      "from; subgroup columns need a csv, chexpert or mimic source")
  if attribute_columns:
    policies["attribute_columns"] = attribute_columns
  if source == "csv":
    return recipes.generic_csv(
        _need(p, "csv", fv, source), fv[f"{p}data_root"].value,
        path_column=fv[f"{p}path_column"].value, label_columns=labels or (),
        task=fv[f"{p}task"].value, patient_column=fv[f"{p}patient_column"].value,
        view_column=fv[f"{p}view_column"].value, site_column=fv[f"{p}site_column"].value,
        id_column=fv[f"{p}id_column"].value, class_column=fv[f"{p}class_column"].value,
        **policies)
  if source == "chexpert":
    return recipes.chexpert(
        _need(p, "csv", fv, source), fv[f"{p}data_root"].value,
        label_columns=recipes.CHEXPERT_COMPETITION if labels is None else labels,
        frontal_only=fv[f"{p}frontal_only"].value, **policies)
  if source == "mimic":
    return recipes.mimic_cxr(
        _need(p, "data_root", fv, source), split=fv[f"{p}mimic_split"].value,
        label_columns=recipes.CHEXPERT_COMPETITION if labels is None else labels,
        frontal_only=fv[f"{p}frontal_only"].value, **policies)
  if source == "folder":
    return folders.folder_manifest(_need(p, "folder", fv, source),
                                   labelled=fv[f"{p}folder_labelled"].value,
                                   patient_regex=fv[f"{p}patient_regex"].value)
  if source == "tfrecords":
    return tfrecords.tfrecords_manifest(_need(p, "tfrecords", fv, source))
  raise ConfigError(f"--{p}source=tfds has no image files to list: convert it first with "
                    f"experiments/make_tfrecords.py --source=tfds --tfds_name=... and use "
                    f"--{p}source=tfrecords")


def dicom_options_from_flags(prefix: str = "",
                             flag_values: flags.FlagValues = flags.FLAGS) -> dicom.DicomOptions:
  """The DicomOptions given by ``--{prefix}dicom_*``; ConfigError naming a bad flag."""
  p, fv = prefix, flag_values
  center = fv[f"{p}dicom_window_center"].value
  width = fv[f"{p}dicom_window_width"].value
  if (center is None) != (width is None):
    raise ConfigError(f"--{p}dicom_window_center and --{p}dicom_window_width go together: "
                      f"got only --{p}dicom_window_{'center' if width is None else 'width'}")
  if width is not None and width < 1:
    raise ConfigError(f"--{p}dicom_window_width={width}: must be >= 1")
  return dicom.DicomOptions(intensity=fv[f"{p}dicom_intensity"].value,
                            window_center=center, window_width=width)


#: Reports of skipped bad examples, printed again when a binary finishes.
SKIPPED: List[str] = []


def manifest_from_flags(prefix: str = "", flag_values: flags.FlagValues = flags.FLAGS,
                        required: bool = True, attribute_columns: Sequence[str] = ()
                        ) -> Optional[Manifest]:
  """The validated Manifest described by the ``--{prefix}*`` flags.

  ``attribute_columns``: extra CSV columns kept in ``Record.attributes`` (see
  :func:`_build_manifest`).

  With ``required=False`` and no ``--{prefix}source``, returns None. Images are checked
  as ``--{prefix}validate`` says; a bad file raises DataError naming it and its CSV row,
  unless ``--{prefix}skip_bad_examples`` drops and counts it (see SKIPPED); skipping
  always decodes every image first, since tf.data cannot skip a file mid-run.
  """
  if not required and flag_values[f"{prefix}source"].value is None:
    return None
  options = dicom_options_from_flags(prefix, flag_values)  # bad flags fail before any I/O
  manifest = dataclasses.replace(
      _build_manifest(prefix, flag_values, attribute_columns), dicom=options)
  check = flag_values[f"{prefix}validate"].value
  skip = flag_values[f"{prefix}skip_bad_examples"].value
  if manifest.storage.is_tfrecords:
    return manifest
  if skip and check != "decode":
    # Only a full decode finds what would fail inside tf.data, where nothing can be skipped.
    print(f"[data] --{prefix}skip_bad_examples: decoding every image before training (as "
          f"--{prefix}validate=decode) so that any file that fails to decode is skipped")
    check = "decode"
  if check == "none":
    return manifest
  manifest, report = validate.validate_manifest(manifest, check=check, skip_bad=skip)
  if report.count:
    line = f"[data] --{prefix}skip_bad_examples: {report.summary()}"
    print(line)
    SKIPPED.append(line)
  return manifest
