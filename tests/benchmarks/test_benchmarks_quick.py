"""The benchmark harness runs end to end in --quick mode and writes the documented schema."""

import json
import os
import subprocess
import sys

# Tolerances here (docs/testing.md):
# derived: achieved_flops * median_s == step_flops is a float64 identity up to two
# roundings (2 * 2^-53 ~ 2e-16 relative), so 1e-6 relative is not a rounding tolerance at all.

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


def test_isa_summary_names_vector_width_and_bf16():
  from benchmarks import run
  assert run.isa_summary({"avx2", "fma"}) == "AVX2 (no bf16 instructions)"
  assert run.isa_summary({"avx2", "avx512f", "avx512_bf16"}) == "AVX-512 + AVX512_BF16 (no AMX)"
  assert run.isa_summary({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}) == (
      "AVX-512 + AMX + AVX512_BF16 + AMX_BF16")
  assert run.isa_summary(set()) == "no AVX2 (no bf16 instructions)"


def test_alternating_pair_runs_both_workers_and_reports_the_ratio():
  """The peer protocol end to end with our own tiny step on both sides (no torch needed):
  both workers answer every round, the order swaps per round, ratio = peer / ours."""
  from benchmarks import run
  spec = {"kind": "peer_pair", "task": "finetune", "variant": "tiny", "image_size": 32,
          "batch": 4, "precision": "float32", "warmup": 1, "rounds": 3, "steps_per_round": 2,
          "peer_program": "ours"}
  record = run.run_pair({"name": "peer/test", "group": "peer", "spec": spec}, timeout=280)
  assert record["ok"], record["error"]
  m = record["metrics"]
  assert len(m["ours"]["times"]) == len(m["peer"]["times"]) == 6
  assert [r["first"] for r in m["rounds"]] == ["ours", "peer", "ours"]
  assert m["ratio"] == m["peer"]["median_s"] / m["ours"]["median_s"]
  assert m["ratio_min"] <= m["ratio_max"] and m["finite_loss"]
  assert record["peak_rss_mb"] > 50 and m["ours"]["framework"] == "tensorflow"
  row = run._row(record)  # pylint: disable=protected-access
  assert f"ratio {m['ratio']:.2f}x" in row[1]


def test_pair_without_torch_is_skipped_with_the_install_hint(tmp_path):
  from benchmarks import run
  fake = tmp_path / "site" / "torch"
  fake.mkdir(parents=True)
  (fake / "__init__.py").write_text("raise ImportError('no torch in this folder')\n")
  spec = {"kind": "peer_pair", "task": "finetune", "variant": "r50x1", "image_size": 224,
          "batch": 16, "precision": "float32", "warmup": 1, "rounds": 1, "steps_per_round": 1}
  record = run.run_pair({"name": "peer/x", "group": "peer", "spec": spec}, timeout=60,
                        peer_pythonpath=str(tmp_path / "site"))
  assert record["skipped"] and not record["ok"]
  assert "requirements-peer.txt" in record["error"] and "no torch in this folder" in record["error"]


def test_plan_on_a_gpu_machine_covers_precisions_xla_and_large_batches():
  from benchmarks import run
  names = {it["name"]: it["spec"] for it in run.plan(False, "/tmp/x", ["NVIDIA H100"])}
  for task in ("finetune", "contrastive"):
    for precision in ("float32", "bfloat16"):
      for suffix, xla in (("", False), ("/xla", True)):
        spec = names[f"train/gpu/{task}/r50x1/224/{precision}{suffix}"]
        assert spec["device"] == "gpu" and spec["xla"] is xla and spec["batch"] >= 64
  assert {"matmul/gpu/float32", "matmul/gpu/bfloat16"} <= set(names)
  assert not any("/gpu/" in n for n in (it["name"] for it in run.plan(False, "/tmp/x", [])))
  peer = [n for n in names if n.startswith("peer/")]
  assert sorted(peer) == sorted(f"peer/{t}/r50x1/224/{p}" for t in ("finetune", "contrastive")
                                for p in ("float32", "bfloat16"))
