"""The progress line's rates leave out the first host-loop call (tracing, start-up)."""

from remedis_tf.train.progress import Progress, format_eta


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_eta_and_rate_leave_out_the_first_call():
  clock = _Clock()
  progress = Progress(total_steps=100, global_batch_size=8, names=["loss"], start_step=0,
                      clock=clock)
  clock.now = 60.0  # the first call (steps 1-10) traces and compiles: 60 s
  progress.steps_done(10)
  # A line right after the first call has no step timing yet.
  assert progress.line(10, {"loss": 1.0}).endswith("| ? img/s | ETA ?")
  for step in (20, 30):  # then 10 steps per second
    clock.now += 1.0
    progress.steps_done(step)
  line = progress.line(30, {"loss": 0.5})
  # 20 steps (160 images) in 2 s since the previous line; 70 steps left at 10 steps/s.
  # Counting the 60 s of tracing would give 70 / (30 / 62) s = 2m24s.
  assert line == "[train] step 30/100 loss 0.5000 | 80.0 img/s | ETA 7s"
  clock.now += 7.0
  progress.steps_done(100)
  assert progress.line(100, {"loss": 0.1}).endswith("ETA 0s")
  assert format_eta(float("inf")) == "?" and format_eta(3725) == "1h02m"
