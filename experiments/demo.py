r"""The README's main command: the whole REMEDIS pipeline on the embedded synthetic data.

  python -m experiments.demo                 # full demo (17-19 min on a 2-core CPU)
  python -m experiments.demo --quick         # smoke test (~2 min)

Generates the synthetic multi-site benchmark, trains stage 1 (supervised upstream),
stage 2 (contrastive, MICLe), fine-tunes the baseline and REMEDIS, evaluates ID and
zero-shot OOD, runs a data-efficiency sweep, and writes OUTPUT_DIR/report.md.
Re-running resumes: finished stages are not recomputed.
"""

import dataclasses

from absl import flags

from experiments import _cli
from remedis_tf import configs
from remedis_tf.runs.demo import DemoConfig, run_demo

FLAGS = flags.FLAGS
_DOCS = configs.field_docs(DemoConfig)
_DEFAULT = DemoConfig()

flags.DEFINE_string("output_dir", "demo_output", "Where data, runs and report.md go.")
flags.DEFINE_bool("quick", False, _DOCS["quick"])
flags.DEFINE_string("variant", None, f"{_DOCS['variant']} (default {_DEFAULT.variant}; "
                    "tiny with --quick).")
flags.DEFINE_integer("image_size", None, f"{_DOCS['image_size']} (default "
                     f"{_DEFAULT.image_size}; 32 with --quick).")
flags.DEFINE_integer("seed", 0, _DOCS["seed"])
for _name in ("upstream_steps", "contrastive_steps", "finetune_steps", "sweep_steps"):
  flags.DEFINE_integer(_name, None, f"Optimizer steps of this stage (default "
                       f"{getattr(_DEFAULT, _name)}; a few with --quick).")
flags.DEFINE_list("fractions", None, f"{_DOCS['fractions']} (default "
                  f"{','.join(map(str, _DEFAULT.fractions))}).")
flags.DEFINE_integer("num_bootstrap", None, _DOCS["num_bootstrap"])
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"], _DOCS["precision"])
flags.DEFINE_integer("workers", 0, _DOCS["workers"])


def main(argv):
  del argv
  overrides = {"seed": FLAGS.seed, "precision": FLAGS.precision, "workers": FLAGS.workers}
  for name in ("variant", "image_size", "upstream_steps", "contrastive_steps",
               "finetune_steps", "sweep_steps", "num_bootstrap"):
    if FLAGS[name].value is not None:
      overrides[name] = FLAGS[name].value
  if FLAGS.fractions:
    overrides["fractions"] = tuple(float(f) for f in FLAGS.fractions)
  if FLAGS.quick:
    config = DemoConfig.quick_config(FLAGS.output_dir, **overrides)
  else:
    config = dataclasses.replace(DemoConfig(out_dir=FLAGS.output_dir), **overrides)
  run_demo(config)


if __name__ == "__main__":
  _cli.run_main(main)
