"""One writer per run directory (remedis_tf.run_lock), in-process.

Local paths (flock): a second lock on the same directory is refused with the holder's pid,
host and start time and changes nothing; a holder killed with SIGKILL leaves nothing that
blocks. Heartbeat protocol (gs://), with a fake clock: a fresh heartbeat blocks, an old one
or a dead same-host pid is stale, ``steal`` takes over, a concurrent writer that wins the
read-back makes acquire fail, and a holder whose lock was taken over notices.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from remedis_tf import run_guard, run_lock
from remedis_tf.errors import ConfigError, RunDirLockedError


class FakeClock:
  def __init__(self, now=1_000_000.0):
    self.now = now

  def __call__(self):
    return self.now

  def sleep(self, seconds):
    self.now += seconds


def _listing(path):
  return sorted((p, os.path.getsize(os.path.join(path, p)),
                 os.path.getmtime(os.path.join(path, p))) for p in os.listdir(path))


def test_second_local_lock_is_refused_naming_the_holder_and_touches_nothing(tmp_path):
  run_dir = str(tmp_path / "run")
  with run_lock.RunLock(run_dir) as first:
    holder = json.loads((tmp_path / "run" / run_lock.LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == run_lock.HOST
    assert holder["token"] == first.token
    before = _listing(run_dir)
    with pytest.raises(RunDirLockedError) as e:
      run_lock.RunLock(run_dir).acquire()
    message = str(e.value)
    assert f"pid {os.getpid()} on host {run_lock.HOST} since " in message, message
    assert run_dir in message and "\n" not in message
    assert _listing(run_dir) == before
  assert os.listdir(run_dir) == []  # released: the lock file is gone
  with run_lock.RunLock(run_dir):  # and the directory can be locked again
    pass


_HOLDER = r'''
import sys, time
from remedis_tf import run_lock
lock = run_lock.RunLock(sys.argv[1], mode=sys.argv[2], settle_s=0).acquire()
print("locked", flush=True)
time.sleep(120)
'''


@pytest.mark.parametrize("mode", ["flock", "heartbeat"])
def test_lock_of_a_sigkilled_process_does_not_block(tmp_path, mode):
  """flock: the kernel drops the lock; heartbeat: same host and a dead pid is stale."""
  run_dir = str(tmp_path / "run")
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))), TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER, run_dir, mode], env=env,
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirLockedError, match=f"pid {proc.pid} on host"):
      run_lock.RunLock(run_dir, mode=mode, settle_s=0).acquire()
    proc.kill()
    proc.wait(timeout=30)  # reaped: the pid no longer exists
  finally:
    proc.kill()
    proc.wait(timeout=30)
  assert os.path.exists(os.path.join(run_dir, run_lock.LOCK_FILE))  # left behind
  lines = []
  with run_lock.RunLock(run_dir, mode=mode, settle_s=0, log=lines.append) as lock:
    assert json.loads(open(lock.path).read())["pid"] == os.getpid()
  if mode == "heartbeat":
    assert any(f"taking over a stale lock of pid {proc.pid}" in l for l in lines), lines


def _foreign(run_dir, clock, host="other-host", pid=4242, age=0.0, every=60.0):
  content = {"token": "f" * 32, "host": host, "pid": pid, "started": clock() - age - 5,
             "heartbeat": clock() - age, "heartbeat_every_s": every}
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, run_lock.LOCK_FILE), "w") as f:
    json.dump(content, f)
  return content


def _heartbeat_lock(run_dir, clock, **kwargs):
  kwargs.setdefault("timeout_s", 100.0)
  return run_lock.RunLock(run_dir, mode="heartbeat", settle_s=1.0, clock=clock,
                          sleep=clock.sleep, log=lambda line: None, **kwargs)


def test_heartbeat_staleness_follows_the_timeout(tmp_path):
  clock = FakeClock()
  run_dir = str(tmp_path / "run")
  _foreign(run_dir, clock, age=99.0, every=10.0)  # just under the 100 s timeout: live
  with pytest.raises(RunDirLockedError, match="pid 4242 on host other-host .*heartbeat "
                                              "99 s ago.*--lock_timeout_s=100"):
    _heartbeat_lock(run_dir, clock).acquire()
  assert json.load(open(os.path.join(run_dir, run_lock.LOCK_FILE)))["token"] == "f" * 32
  clock.now += 2.0  # 101 s since the heartbeat: stale
  lock = _heartbeat_lock(run_dir, clock).acquire()
  try:
    assert json.load(open(lock.path))["token"] == lock.token
  finally:
    lock.release()
  assert not os.path.exists(lock.path)


def test_heartbeat_of_a_slow_holder_counts_three_of_its_intervals(tmp_path):
  """A holder beating every 60 s is not stale after 100 s (limit = max(timeout, 3*60))."""
  clock = FakeClock()
  run_dir = str(tmp_path / "run")
  _foreign(run_dir, clock, age=170.0, every=60.0)
  with pytest.raises(RunDirLockedError):
    _heartbeat_lock(run_dir, clock).acquire()
  clock.now += 11.0
  _heartbeat_lock(run_dir, clock).acquire().release()


def test_steal_takes_a_live_lock(tmp_path):
  clock = FakeClock()
  run_dir = str(tmp_path / "run")
  _foreign(run_dir, clock, age=1.0)
  lines = []
  lock = run_lock.RunLock(run_dir, mode="heartbeat", settle_s=0, steal=True, clock=clock,
                          sleep=clock.sleep, log=lines.append).acquire()
  lock.release()
  assert any("taking over the lock of pid 4242 on host other-host" in l for l in lines)


def test_a_writer_that_wins_the_read_back_makes_acquire_fail(tmp_path):
  clock = FakeClock()
  run_dir = str(tmp_path / "run")
  rival = {}

  def rival_writes_during_settle(seconds):
    clock.sleep(seconds)
    rival.update(_foreign(run_dir, clock, host="rival-host", pid=7))

  lock = run_lock.RunLock(run_dir, mode="heartbeat", settle_s=1.0, clock=clock,
                          sleep=rival_writes_during_settle, log=lambda line: None)
  with pytest.raises(RunDirLockedError, match="pid 7 on host rival-host.*same moment"):
    lock.acquire()
  assert json.load(open(lock.path))["token"] == rival["token"]  # the rival's lock stays


def test_holder_beats_and_notices_a_takeover(tmp_path):
  clock = FakeClock()
  run_dir = str(tmp_path / "run")
  first = _heartbeat_lock(run_dir, clock, host="host-a").acquire()
  try:
    for _ in range(3):  # 3 x 90 s > timeout, but each heartbeat is fresh
      clock.now += 90.0
      assert first.heartbeat()
      with pytest.raises(RunDirLockedError, match="on host host-a"):
        _heartbeat_lock(run_dir, clock, host="host-b").acquire()
    clock.now += 101.0  # host-a stalls past the timeout
    second = _heartbeat_lock(run_dir, clock, host="host-b").acquire()
    assert not first.heartbeat() and first.lost
    assert "taken over by pid" in first.lost_message()
    assert "host host-b" in first.lost_message()
    first.release()  # must not remove host-b's lock
    assert json.load(open(second.path))["token"] == second.token
    second.release()
  finally:
    first.release()


def test_heartbeat_thread_refreshes_the_lock(tmp_path):
  lock = run_lock.RunLock(str(tmp_path / "run"), mode="heartbeat", timeout_s=0.5,
                          settle_s=0).acquire()
  try:
    beat0 = json.load(open(lock.path))["heartbeat"]
    deadline = time.time() + 10
    while json.load(open(lock.path))["heartbeat"] == beat0:
      assert time.time() < deadline, "no heartbeat within 10 s (interval 0.05 s)"
      time.sleep(0.02)
  finally:
    lock.release()
  assert not os.path.exists(lock.path)


def test_bad_timeout_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match="--lock_timeout_s must be > 0, got 0"):
    run_lock.RunLock(str(tmp_path), timeout_s=0)


def test_guarded_run_keeps_a_fresh_dir_when_the_lock_is_refused(tmp_path):
  """A refused second process must not delete the directory the holder just created
  (guarded_run removes fresh run dirs after other early user errors)."""
  run_dir = str(tmp_path / "run")
  with pytest.raises(RunDirLockedError):
    with run_guard.guarded_run(run_dir):
      holder = run_lock.RunLock(run_dir).acquire()  # "the other process", a moment later
      try:
        run_lock.RunLock(run_dir).acquire()
      finally:
        holder_path = holder.path
  assert os.path.exists(holder_path)  # the holder's lock and directory are still there
  holder.release()
  with pytest.raises(ConfigError):
    with run_guard.guarded_run(run_dir + "2"):
      os.makedirs(run_dir + "2")
      raise ConfigError("bad flag")
  assert not os.path.exists(run_dir + "2")  # other user errors still clean up
