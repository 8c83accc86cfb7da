r"""Evaluate a fine-tuned classifier on any number of named sets (ID and zero-shot OOD).

Each set is one repeated ``--eval_set=NAME=[SOURCE:]PATH``: PATH is the CSV (csv and
chexpert sources), the MIMIC-CXR-JPG root (mimic), the image folder (folder) or the
TFRecord prefix (tfrecords); SOURCE defaults to --eval_source. The other --eval_* data
flags (label columns, policies, patient column, ...) apply to every set; label columns
default to the model's own labels (matched by name, so extra columns are ignored). A set
labelled for only some of the model's labels (name those with --eval_label_columns) is
scored on the labels it has; the others are printed and listed as missing_labels in
summary.json (its mean AUC averages the shared labels only).

Example (CheXpert-trained model; ID test + MIMIC-CXR as zero-shot OOD; operating point
chosen on the CheXpert validation set by Youden's J):

  python -m experiments.evaluate --model=/runs/cxr_finetune_remedis \
    --eval_source=chexpert \
    --eval_set=id_valid=/data/CheXpert-v1.0/valid.csv \
    --eval_set=id_test=/data/chexpert_test.csv \
    --eval_set=ood_mimic=mimic:/data/mimic-cxr-jpg --eval_mimic_split=test \
    --val_set=id_valid --operating_point=youden --output_dir=/runs/eval_remedis

Reviewer reports: --subgroup=Sex --subgroup=AP/PA --subgroup=Age:40,60,80 (CheXpert
columns; any column of the sets' CSVs, MIMIC's metadata columns such as ViewPosition, or
view / site) adds <set>_subgroups.json|.csv: every metric per subgroup with patient-level
CIs, sizes and flags for subgroups too small for an interval. Every set also gets
<set>_calibration.json and <set>_reliability.png: ECE (--calibration_bins equal-width
bins) and reliability curves before and after temperature scaling (the temperatures
saved with the model's best checkpoint, else fitted on --val_set).

Writes OUTPUT_DIR/<set>.json|.csv (metrics with patient-level bootstrap CIs),
<set>_predictions.csv, the files above, and summary.json|.csv (one row per set).

Comparing two models (e.g. REMEDIS against a supervised baseline): --reference_model=DIR
also writes OUTPUT_DIR/findings.json, one paired finding per set (this model − the
reference on the same patients, 95 % bootstrap interval, verdict better / worse / no
difference; docs/demo_protocol.md "Findings and verdicts"). Sets named by --id_set are
in-distribution (id_<set> findings), the others out-of-distribution (ood_<set>).
"""

from __future__ import annotations

import os

from absl import flags

from experiments import _cli, data_flags
from remedis_tf import configs
from remedis_tf.errors import ConfigError
from remedis_tf.eval import calibration, subgroups, thresholds
from remedis_tf.runs import classifier, compare_models, stages
from remedis_tf.runs import evaluate as evaluate_lib
from remedis_tf.weights import classifier_export, preset

FLAGS = flags.FLAGS
PREFIX = "eval_"
# Data flags whose role --eval_set's PATH takes over.
_PATH_FLAG = {"csv": "csv", "chexpert": "csv", "mimic": "data_root", "folder": "folder",
              "tfrecords": "tfrecords"}

flags.DEFINE_string("model", None, "Fine-tuning run directory (uses its best checkpoint, see "
                    "--which), a classifier preset written by --export_preset (a folder, or a "
                    "kaggle:// / hf:// KerasHub handle of a published one), or a classifier "
                    "SavedModel written by --export_savedmodel.",
                    required=True)
flags.DEFINE_enum("which", "best", ["best", "latest"], "Checkpoint of a run directory: best "
                  "(model selection on its validation set; latest if it had none) or latest.")
flags.DEFINE_multi_string("eval_set", None, "A named evaluation set, NAME=[SOURCE:]PATH "
                          "(repeat the flag for more sets). NAME becomes the file name "
                          "(e.g. id_test, ood_site_b); SOURCE is one of csv, chexpert, mimic, "
                          "folder, tfrecords (default --eval_source); PATH is the CSV, MIMIC "
                          "root, folder or TFRecord prefix.", required=True)
data_flags.define_data_flags(PREFIX, role="evaluation")
flags.DEFINE_string("output_dir", None, "Where the metric files and summary go (local or "
                    "gs://). Files are only written once every set was evaluated.",
                    required=True)
flags.DEFINE_integer("num_bootstrap", 1000, "Bootstrap resamples (patients resampled with "
                     "all their images) for the 95% CIs; 0 = no CIs.")
flags.DEFINE_string("operating_point", "youden", "Threshold for sensitivity/specificity: "
                    "youden (max sensitivity+specificity-1), sensitivity:T or specificity:T "
                    "(e.g. sensitivity:0.9), all chosen per class on --val_set; or a fixed "
                    "threshold such as 0.5. Without --val_set a rule falls back to 0.5.")
flags.DEFINE_string("val_set", None, "NAME of the --eval_set on which the operating point is "
                    "chosen (its own sensitivity/specificity are then optimistic).")
flags.DEFINE_string("metric", None, "Main metric of the summary (default mean_auc; "
                    "top1_accuracy for multi-class; e.g. top3_accuracy for dermatology).")
flags.DEFINE_integer("batch_size", 64, "Images per prediction batch.")
flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
flags.DEFINE_bool("save_predictions", True, "Also write <set>_predictions.csv with "
                  "per-image scores, labels and masks.")
flags.DEFINE_string("export_savedmodel", None, "Also export the --model run directory as a "
                    "self-describing classifier SavedModel at this path (probabilities from "
                    "images in [0,1], using the temperatures saved with the best checkpoint; "
                    "label names, image size, crop and temperatures in "
                    "remedis_classifier.json). Its serving_default signature (Keras "
                    "TFSMLayer's default endpoint) expects images already centre-cropped and "
                    "resized to the image size; serving_any_size crops and resizes any-size "
                    "images itself, as this evaluation does.")
flags.DEFINE_string("export_preset", None, "Also export the --model run directory as a "
                    "KerasHub classifier preset folder at this path (label names, task, image "
                    "size, eval crop and the saved temperatures travel with it; a README.md "
                    "model card with this evaluation's metrics). "
                    "keras_hub.models.ImageClassifier.from_preset loads it after import "
                    "remedis_tf; it is accepted as --model and as --init.")
flags.DEFINE_string("license", None, "For --export_preset's model card: the licence of the "
                    "weights the model was fine-tuned from (e.g. Apache-2.0).")
flags.DEFINE_multi_string("subgroup", None, "Report every metric per value of this column "
                          "(repeat for more): a CSV column of the sets (e.g. Sex, AP/PA; "
                          "MIMIC: a metadata column such as ViewPosition), or view / site; "
                          "COLUMN:E1,E2,... cuts a numeric column into bands <E1, [E1, E2), "
                          "..., >=En (e.g. Age:40,60,80). Writes <set>_subgroups.json|.csv.")
flags.DEFINE_integer("subgroup_min_patients", subgroups.DEFAULT_MIN_PATIENTS, "Subgroups "
                     "with fewer patients get point estimates but no CI and are flagged "
                     "(as are findings without positives or negatives in a subgroup).")
flags.DEFINE_integer("calibration_bins", calibration.DEFAULT_NUM_BINS, "Equal-width "
                     "probability bins on [0, 1] for the expected calibration error and the "
                     "reliability diagrams (<set>_calibration.json, <set>_reliability.png); "
                     "0 = no calibration report.")


flags.DEFINE_string("reference_model", None, "A second model (run directory, classifier "
                    "preset or SavedModel) to compare --model with on every --eval_set: "
                    "writes findings.json with paired differences (model − reference), "
                    "intervals and verdicts.")
flags.DEFINE_multi_string("id_set", None, "With --reference_model: an --eval_set NAME that is "
                          "in-distribution (its finding is id_NAME); every other set is "
                          "out-of-distribution (ood_NAME). Repeat for several.")


def parse_eval_sets(specs, default_source):
  """``["NAME=[SOURCE:]PATH", ...]`` → ``{name: (source, path)}`` (ConfigError if bad)."""
  sets = {}
  for spec in specs or ():
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
      raise ConfigError(f"--eval_set={spec!r}: expected NAME=[SOURCE:]PATH")
    source, colon, path = rest.partition(":")
    if not colon or source not in _PATH_FLAG:
      source, path = default_source, rest
    if source is None:
      raise ConfigError(f"--eval_set={spec!r} names no source: write NAME=SOURCE:PATH or set "
                        f"--{PREFIX}source (one of {', '.join(_PATH_FLAG)})")
    if source not in _PATH_FLAG:
      raise ConfigError(f"--eval_set={spec!r}: source {source!r} is not one of "
                        f"{', '.join(_PATH_FLAG)}")
    if name in sets:
      raise ConfigError(f"--eval_set: set name {name!r} given twice")
    sets[name] = (source, path)
  if not sets:
    raise ConfigError("give at least one --eval_set=NAME=[SOURCE:]PATH")
  evaluate_lib.check_set_names(list(sets))
  return sets


def model_label_names(model: str):
  """The label names recorded with a run directory or classifier SavedModel (None if
  neither is recognisable; evaluate_model then reports the problem)."""
  if preset.is_keras_hub(model):  # before any stat: kaggle:// / hf:// are no file systems
    return preset.preset_info(model).get("label_names")
  if classifier_export.is_classifier_savedmodel(model):
    return list(classifier_export.read_sidecar(model)["label_names"])
  if preset.is_preset(model):
    return preset.preset_info(model).get("label_names")
  if os.path.isdir(model) or model.startswith("gs://"):
    try:
      return list(configs.read_run_config(model)["data"]["label_names"])
    except (ConfigError, KeyError):
      return None
  return None


def _manifest(source: str, path: str, labels, attribute_columns=()):
  """Builds one set's manifest with the shared --eval_* flags and this set's source/path."""
  values = flags.FlagValues()
  data_flags.define_data_flags(PREFIX, flag_values=values)
  for flag_name in values:
    if FLAGS[flag_name].present:
      values[flag_name].value = FLAGS[flag_name].value
  values.mark_as_parsed()
  values[f"{PREFIX}source"].value = source
  values[f"{PREFIX}{_PATH_FLAG[source]}"].value = path
  if (values[f"{PREFIX}label_columns"].value is None and labels is not None
      and not values[f"{PREFIX}class_column"].value):
    values[f"{PREFIX}label_columns"].value = labels
  return data_flags.manifest_from_flags(PREFIX, flag_values=values,
                                        attribute_columns=attribute_columns)


def main(argv):
  del argv
  for name in ("csv", "folder", "tfrecords"):
    if FLAGS[f"{PREFIX}{name}"].present:
      raise ConfigError(f"--{PREFIX}{name} is not used here: give each set as "
                        "--eval_set=NAME=[SOURCE:]PATH")
  sets = parse_eval_sets(FLAGS.eval_set, FLAGS[f"{PREFIX}source"].value)
  if FLAGS.val_set is not None and FLAGS.val_set not in sets:
    raise ConfigError(f"--val_set={FLAGS.val_set} is not one of the --eval_set names "
                      f"{sorted(sets)}")
  thresholds.parse_operating_point(FLAGS.operating_point)
  if FLAGS.reference_model and FLAGS.num_bootstrap < 1:
    raise ConfigError("--reference_model needs --num_bootstrap >= 1 (the findings' intervals)")
  if FLAGS.id_set and not FLAGS.reference_model:
    raise ConfigError("--id_set only applies with --reference_model")
  unknown = sorted(set(FLAGS.id_set or ()) - set(sets))
  if unknown:
    raise ConfigError(f"--id_set={','.join(unknown)} is not one of the --eval_set names "
                      f"{sorted(sets)}")
  keep = subgroups.attribute_columns(FLAGS.subgroup or ())
  labels = model_label_names(FLAGS.model)
  manifests = {name: _manifest(source, path, labels, keep)
               for name, (source, path) in sets.items()}
  summary = evaluate_lib.evaluate_model(
      FLAGS.model, manifests, FLAGS.output_dir, num_bootstrap=FLAGS.num_bootstrap,
      operating_point=FLAGS.operating_point, val_set=FLAGS.val_set,
      batch_size=FLAGS.batch_size, seed=FLAGS.seed, which=FLAGS.which, metric=FLAGS.metric,
      save_predictions=FLAGS.save_predictions, subgroups=FLAGS.subgroup or (),
      subgroup_min_patients=FLAGS.subgroup_min_patients,
      calibration_bins=FLAGS.calibration_bins)
  if FLAGS.reference_model:
    compare_models.compare_models(FLAGS.model, FLAGS.reference_model, manifests,
                                  FLAGS.output_dir, id_sets=FLAGS.id_set or (),
                                  num_bootstrap=FLAGS.num_bootstrap, seed=FLAGS.seed,
                                  batch_size=FLAGS.batch_size, which=FLAGS.which)
  if FLAGS.export_savedmodel or FLAGS.export_preset:
    if summary["model_kind"] != "run_dir":
      flag = "--export_savedmodel" if FLAGS.export_savedmodel else "--export_preset"
      raise ConfigError(f"{flag} needs --model to be a run directory")
    task, run_config = stages.load_classifier(FLAGS.model, which=FLAGS.which)  # once for both
    crop = stages.eval_crop_fraction(run_config)
  if FLAGS.export_savedmodel:
    classifier.export_classifier_savedmodel(task, FLAGS.export_savedmodel, source=FLAGS.model,
                                            crop_fraction=crop)
    temps = "none (T = 1)" if task.temperature is None else task.temperature["temperature"]
    fallback = sorted(((task.temperature or {}).get("fallback") or {}))
    print(f"[export] classifier SavedModel written to {FLAGS.export_savedmodel} "
          f"(temperatures {temps}"
          + (f"; left at T = 1 for {', '.join(fallback)}, reasons in "
             f"{classifier_export.SIDECAR_FILE}" if fallback else "") + ")")
  if FLAGS.export_preset:
    metrics = [{"set": name, **row} for name, row in summary["sets"].items()]
    classifier.export_classifier_preset(task, FLAGS.export_preset, source=FLAGS.model,
                                        crop_fraction=crop,
                                        card={"metrics": metrics, "license": FLAGS.license})
    print(f"[export] classifier preset written to {FLAGS.export_preset}")
  for name, row in summary["sets"].items():
    ci = "" if row["lower"] is None else f" [{row['lower']:.4f}, {row['upper']:.4f}]"
    value = "n/a" if row["value"] is None else f"{row['value']:.4f}"
    lacking = row.get("missing_labels")
    print(f"{name}: {row['metric']} {value}{ci} ({row['num_examples']} images"
          + (f"; not labelled for {', '.join(lacking)}" if lacking else "") + ")")


if __name__ == "__main__":
  _cli.run_main(main)
