"""The model card (``README.md``) written into every KerasHub preset folder.

Kaggle Models and Hugging Face show a preset folder's ``README.md`` as its page. The card
says what the weights are (backbone variant; for a classifier its labels, task, input size
and eval crop), where they came from (``source``), what data they were fine-tuned on, the
metrics measured (with their 95% intervals when known), the intended use, the licence of
the source weights, and how to load and publish the folder. What the caller does not know
is written as "not recorded", never guessed.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping

NOT_RECORDED = "not recorded"
DEFAULT_USE = ("Research on medical-image representation learning and transfer (REMEDIS: BiT "
               "pretraining, SimCLR/MICLe, fine-tuning). Not a medical device and not validated "
               "for clinical use; evaluate on data from the intended site before any use.")


def _metric_rows(metrics: List[Mapping[str, Any]]) -> List[str]:
  lines = ["| set | metric | value | 95% interval | images |", "|---|---|---|---|---|"]
  for row in metrics:
    value = row.get("value")
    interval = ("—" if row.get("lower") is None
                else f"[{row['lower']:.4f}, {row['upper']:.4f}]")
    lines.append(f"| {row.get('set', '?')} | {row.get('metric', '?')} | "
                 f"{'n/a' if value is None else f'{value:.4f}'} | {interval} | "
                 f"{row.get('num_examples', '?')} |")
  return lines


def render(info: Mapping[str, Any], card: Mapping[str, Any]) -> str:
  """The card's Markdown.

  Args:
    info: the preset's description (``keras_hub_presets.preset_info``).
    card: what the caller knows: ``license`` (of the source weights), ``data`` (what it
      was trained / fine-tuned on), ``metrics`` (rows with ``set``, ``metric``, ``value``,
      ``lower``, ``upper``, ``num_examples``), ``intended_use``, ``title``.
  A ``license`` that is one token (``Apache-2.0``) is also the front matter's ``license``
  (lower-cased, as Hugging Face spells identifiers); anything else is ``other`` there.
  """
  classifier = info.get("class_name") == "Classifier"
  variant = (info.get("backbone") or {}).get("variant", "?")
  metadata: Dict[str, Any] = dict(info.get("metadata") or {})
  licence = card.get("license") or NOT_RECORDED
  # Hugging Face's front matter wants an identifier (apache-2.0); free text is "other".
  licence_id = (licence.lower() if re.fullmatch(r"[A-Za-z0-9.\-]+", str(licence))
                and card.get("license") else "other")
  kind = "image classifier" if classifier else "image feature extractor (backbone)"
  title = card.get("title") or f"REMEDIS / BiT ResNet-v2 {variant} {kind}"
  lines = ["---", "library_name: keras-hub",
           f"license: {licence_id}",
           "tags:", "- remedis_tf", "- bit", "- medical-imaging",
           f"- {'image-classification' if classifier else 'image-feature-extraction'}",
           "---", "", f"# {title}", "",
           f"A BiT ResNet-v2 ({variant}: GroupNorm + weight standardisation) "
           f"{'fine-tuned classifier' if classifier else 'backbone'} as a KerasHub preset, "
           f"written by remedis_tf {metadata.get('remedis_tf_version', '')} (Keras {metadata.get('keras_version')}, "
           f"KerasHub {metadata.get('keras_hub_version')}, TensorFlow "
           f"{metadata.get('tensorflow_version')}); {metadata.get('parameter_count', '?')} "
           "backbone parameters.", "", "## Load", "", "```python",
           "import keras_hub", "import remedis_tf  # registers the remedis_tf> classes", ""]
  if classifier:
    lines += ['model = keras_hub.models.ImageClassifier.from_preset("PRESET")',
              "scores = model.predict(images)  # float [B,H,W,3] RGB in [0,1] -> [B,K]"]
  else:
    lines += ['backbone = keras_hub.models.Backbone.from_preset("PRESET")',
              "feature_map = backbone(images)  # float [B,H,W,3] RGB in [0,1] -> [B,h,w,C]"]
  lines += ["```", "", "PRESET is this folder, or its `kaggle://…` / `hf://…` handle. Publish "
            "it with `keras_hub.upload_preset(\"kaggle://USER/MODEL/keras/VARIANT\", "
            "\"PRESET\")` (or `\"hf://USER/MODEL\"`).", "",
            "## Source checkpoint", "", str(metadata.get("source") or NOT_RECORDED), "",
            "## Data", "", str(card.get("data") or NOT_RECORDED), ""]
  if classifier:
    temps = (info.get("temperature") or {}).get("temperature")
    lines += [f"- task: {info.get('task')}; outputs (in order): "
              f"{', '.join(info.get('label_names') or [])}",
              f"- input: centre crop {info.get('crop_fraction')} of the shorter side, bicubic "
              f"resize to {info.get('image_size')} px (the preprocessor does both)",
              f"- scores: {'softmax' if info.get('task') == 'multiclass' else 'sigmoid'} of "
              f"logits / T, temperatures {temps or 'none (T = 1)'}", ""]
  lines += ["## Metrics", ""]
  metrics = card.get("metrics")
  lines += (_metric_rows(metrics) if metrics else
            [f"{NOT_RECORDED} with this preset (`python -m experiments.evaluate "
             "--model=PRESET ...` measures them, with patient-level bootstrap intervals)."])
  lines += ["", "## Intended use", "", str(card.get("intended_use") or DEFAULT_USE), "",
            "## Licence of the source weights", "",
            f"{licence}" + ("" if card.get("license") else
                            ": state it here before publishing (BiT's released weights and "
                            "timm's copies of them carry their publishers' licences)."), ""]
  return "\n".join(lines)
