"""run_demo stops, instead of going on, when a training run of it was preempted."""

from remedis_tf.runs import demo
from remedis_tf.train.loop import LoopResult


def test_a_preempted_stage_stops_the_demo(tmp_path, monkeypatch):
  calls = []

  def preempted_stage_1(*args, **kwargs):
    calls.append(kwargs.get("stage"))
    return LoopResult(final_step=3, resumed_from=0, preempted=True, last_metrics={},
                      history=[], checkpoint_path=None)

  def must_not_run(*args, **kwargs):
    raise AssertionError("stage 2 started from a half-trained stage 1")

  monkeypatch.setattr(demo.stages, "run_supervised", preempted_stage_1)
  monkeypatch.setattr(demo.stages, "run_contrastive", must_not_run)
  lines = []
  cfg = demo.DemoConfig.quick_config(str(tmp_path / "out"))
  assert demo.run_demo(cfg, log=lines.append) is None
  assert calls == ["upstream"]
  assert any(line.startswith("[demo] stopped by a signal during stage 1") for line in lines)
  assert not (tmp_path / "out" / "report.md").exists()
