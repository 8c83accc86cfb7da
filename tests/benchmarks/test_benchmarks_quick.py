"""The benchmark harness runs end to end in --quick mode and writes the documented schema."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quick_run_writes_json_and_markdown(tmp_path):
  out = tmp_path / "results"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick",
                         f"--out_dir={out}"], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  files = sorted(os.listdir(out))
  json_files = [f for f in files if f.endswith("-quick.json")]
  assert len(json_files) == 1 and "latest.md" in files
  report = json.loads((out / json_files[0]).read_text())
  assert report["schema_version"] == 1 and report["quick"] is True
  assert {"cpu_model", "cores", "ram_gb", "tf", "gpus"} <= set(report["machine"])
  kinds = {r["spec"]["kind"] for r in report["results"]}
  assert kinds == {"matmul", "train_step", "pipeline"}
  for r in report["results"]:
    assert r["ok"], r["error"]
    assert r["peak_rss_mb"] > 50  # a TensorFlow process, measured by wait4
    assert r["load_avg_1m_before"] >= 0 and r["load_avg_1m_after"] >= 0
    m = r["metrics"]
    if r["spec"]["kind"] == "matmul":
      assert m["best_flops"] >= m["median_flops"] > 0
    elif r["spec"]["kind"] == "train_step":
      assert m["finite_loss"] and m["examples_per_s"] > 0
      assert m["median_s"] >= m["best_s"] > 0
      # FLOP/s is the analytic step count over the median step time.
      assert abs(m["achieved_flops"] * m["median_s"] - m["step_flops"]) < 1e-6 * m["step_flops"]
      assert 0 < m["fraction_of_ceiling"] == m["achieved_flops"] / next(
          x["metrics"]["best_flops"] for x in report["results"]
          if x["name"] == "matmul/cpu/float32")
    else:
      assert m["examples_per_s"] > 0 and m["examples"] == r["spec"]["batch"] * r["spec"][
          "batches"]
  table = (out / "latest.md").read_text()
  assert all(r["name"] in table for r in report["results"])


def test_analytic_flops_match_the_convolutions_the_model_runs(monkeypatch):
  """benchmarks.flops against MACs recorded from the convolutions of a real forward pass."""
  import numpy as np
  from benchmarks import flops
  from remedis_tf.models import resnet_v2
  recorded = []
  original = resnet_v2.StandardizedConv2D.convolution_op

  def spy(self, inputs, kernel):
    out = original(self, inputs, kernel)
    recorded.append(int(np.prod(out.shape[1:3])) * int(np.prod(kernel.shape)))
    return out

  monkeypatch.setattr(resnet_v2.StandardizedConv2D, "convolution_op", spy)
  for variant, size in (("r50x1", 96), ("small", 64), ("tiny", 40)):
    model = resnet_v2.ResNetV2(variant)
    model(np.zeros((1, size, size, 3), np.float32))  # builds (traces convs more than once)
    recorded.clear()
    model(np.zeros((1, size, size, 3), np.float32))
    assert flops.backbone_macs(resnet_v2.get_spec(variant), size)["total"] == sum(recorded)
  assert 4.0e9 < flops.backbone_macs(resnet_v2.get_spec("r50x1"), 224)["total"] < 4.2e9
