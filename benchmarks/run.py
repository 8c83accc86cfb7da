"""Performance benchmarks of remedis_tf on the current machine.

    python -m benchmarks.run                 # everything (~25 min on 2 CPU cores)
    python -m benchmarks.run --quick         # tiny sizes: checks the harness (< 1 min)
    python -m benchmarks.run --only=matmul,pipeline/contrastive

Writes ``benchmarks/results/<machine>-<date>.json`` and ``benchmarks/results/latest.md``
(``--out_dir`` to change). Each measurement runs in a fresh subprocess
(``benchmarks.measure``); its peak RSS is the child's own ``VmHWM`` (``benchmarks.child_memory``) and the 1-minute load
average is recorded before and after it, because a busy machine slows every number down.
See benchmarks/README.md for what is measured and how FLOPs are counted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

from benchmarks import child_memory

SCHEMA_VERSION = 1
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(_ROOT, "benchmarks", "results")

# Targets on a CPU machine (issue 7).
TARGET_STEP_FRACTION = 0.55
TARGET_GENERIC_PER_S = 275.0
TARGET_CXR_PER_S = TARGET_GENERIC_PER_S / 2
# Issue 13: our fp32 train steps against the PyTorch peer, measured in one run.
TARGET_PEER_RATIO = 1.0
STRETCH_PEER_RATIO = 1.2


# ------------------------------------------------------------------------------ machine


def machine_info(write_data: Optional[List] = None) -> Dict:
  """CPU model, cores, RAM, CPU flags of interest, TF version and GPUs (via a subprocess so
  this process never initialises TensorFlow). ``write_data = [dir, count, size]`` also
  writes the benchmark images in that subprocess (one TensorFlow start instead of two)."""
  info = {"cpu_model": platform.processor() or "unknown", "cores": os.cpu_count(),
          "ram_gb": None, "bf16_cpu": False, "python": platform.python_version()}
  try:
    with open("/proc/cpuinfo") as f:
      text = f.read()
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    if model:
      info["cpu_model"] = model.group(1).strip()
    flags = set((re.search(r"^flags\s*:\s*(.+)$", text, re.M) or [None, ""])[1].split())
    info["cpu_flags"] = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16",
                                        "amx_tile", "amx_int8", "avx512_vnni", "avx_vnni",
                                        "avx512_fp16", "fma"})
    info["bf16_cpu"] = bool(flags & {"avx512_bf16", "amx_bf16"})
    info["isa"] = isa_summary(flags)
  except OSError:
    pass
  try:
    with open("/proc/meminfo") as f:
      kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    info["ram_gb"] = round(kb / 2 ** 20, 1)
  except (OSError, AttributeError):
    pass
  probe = ("import json, sys, tensorflow as tf\n"
           "if len(sys.argv) > 1:\n"
           "  from benchmarks import data\n"
           "  data.write_dataset(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))\n"
           "g = tf.config.list_physical_devices('GPU')\n"
           "names = [tf.config.experimental.get_device_details(d).get('device_name', d.name)"
           " for d in g]\n"
           "print(json.dumps({'tf': tf.__version__, 'gpus': names}))\n")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  args = [str(a) for a in write_data or []]
  try:
    out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                         env=env, timeout=1800, check=True, cwd=_ROOT).stdout
    info.update(json.loads(out.strip().splitlines()[-1]))
  except subprocess.CalledProcessError as e:
    raise RuntimeError(f"machine probe / data writer failed: {e.stderr[-2000:]}") from e
  except (subprocess.SubprocessError, ValueError, IndexError) as e:
    info.update({"tf": "unknown", "gpus": [], "probe_error": str(e)[:200]})
  return info


def isa_summary(flags) -> str:
  """One line naming the widest vector ISA and the bf16 support of a /proc/cpuinfo flag
  set, e.g. ``AVX-512 + AVX512_BF16 (no AMX)`` or ``AVX2 (no bf16 instructions)``."""
  flags = set(flags)
  if "amx_tile" in flags or "amx_bf16" in flags:
    vector = "AVX-512 + AMX" if "avx512f" in flags else "AMX"
  elif "avx512f" in flags:
    vector = "AVX-512"
  elif "avx2" in flags:
    vector = "AVX2"
  else:
    vector = "no AVX2"
  bf16 = [name.upper() for name in ("avx512_bf16", "amx_bf16") if name in flags]
  extra = (" + " + " + ".join(bf16)) if bf16 else ""
  note = "" if bf16 else " (no bf16 instructions)"
  if bf16 and "amx" not in vector.lower():
    note = " (no AMX)"
  return vector + extra + note


def machine_slug(info: Dict) -> str:
  cpu = re.sub(r"[^a-z0-9]+", "-", info["cpu_model"].lower()).strip("-")[:24]
  slug = f"{cpu}-{info['cores']}c"
  if info.get("gpus"):
    slug += "-" + re.sub(r"[^a-z0-9]+", "-", info["gpus"][0].lower()).strip("-")[:16]
  return slug


# ------------------------------------------------------------------------- the plan


def plan(quick: bool, data_dir: str, gpus: List[str]) -> List[Dict]:
  """The measurements to run, each ``{"name", "group", "spec"}``."""
  items: List[Dict] = []

  def add(name, **spec):
    items.append({"name": name, "group": name.split("/")[0], "spec": spec})

  devices = ["cpu"] + (["gpu"] if gpus else [])
  for device in devices:
    for dtype in ("float32",) if quick else ("float32", "bfloat16"):
      sizes, reps = ([256], [3]) if quick else ([4096, 8192], [5, 3])
      add(f"matmul/{device}/{dtype}", kind="matmul", device=device, dtype=dtype, sizes=sizes,
          repeats=reps)
  if quick:
    for task in ("contrastive", "finetune"):
      add(f"train/cpu/{task}/tiny/32/float32", kind="train_step", device="cpu", task=task,
          variant="tiny", image_size=32, batch=4, precision="float32", steps=2, warmup=1,
          xla=False, profile=False)
    common = dict(data_dir=data_dir, image_size=32, batch=8, warmup_batches=1, batches=2)
    add("pipeline/contrastive/generic/tfrecords", kind="pipeline", which="contrastive",
        preset="generic", source="tfrecords", **common)
    return items
  cpu_runs = [("r50x1", 224, {"contrastive": 8, "finetune": 16}),
              ("small", 64, {"contrastive": 64, "finetune": 64})]
  for variant, size, batches in cpu_runs:
    for task in ("contrastive", "finetune"):
      for precision in ("float32", "bfloat16"):
        add(f"train/cpu/{task}/{variant}/{size}/{precision}", kind="train_step", device="cpu",
            task=task, variant=variant, image_size=size, batch=batches[task],
            precision=precision, steps=10, warmup=2, xla=False, profile=variant == "r50x1")
  for precision in ("float32", "bfloat16"):
    for task, batch in (("finetune", 16), ("contrastive", 8)):
      add(f"peer/{task}/r50x1/224/{precision}", kind="peer_pair", task=task, variant="r50x1",
          image_size=224, batch=batch, precision=precision, warmup=1, rounds=3,
          steps_per_round=2)
  if gpus:
    for variant, size, batch in (("r50x1", 224, 64), ("small", 64, 256)):
      for task in ("contrastive", "finetune"):
        for precision in ("float32", "bfloat16"):
          for xla in (False, True):
            add(f"train/gpu/{task}/{variant}/{size}/{precision}{'/xla' if xla else ''}",
                kind="train_step", device="gpu", task=task, variant=variant, image_size=size,
                batch=batch, precision=precision, steps=20, warmup=3, xla=xla, profile=False)
  common = dict(data_dir=data_dir, image_size=224, batch=64, warmup_batches=3, batches=12)
  for preset in ("generic", "cxr"):
    for source in ("png", "tfrecords"):
      add(f"pipeline/contrastive/{preset}/{source}", kind="pipeline", which="contrastive",
          preset=preset, source=source, **common)
  add("pipeline/finetune/generic/png", kind="pipeline", which="finetune", preset="generic",
      source="png", **common)
  add("pipeline/finetune/cxr/png", kind="pipeline", which="finetune", preset="cxr",
      source="png", **common)
  for source in ("png", "tfrecords"):
    add(f"pipeline/eval/{source}", kind="pipeline", which="eval", preset="generic",
        source=source, **common)
  for preset in ("generic", "cxr"):
    add(f"profile/pipeline/{preset}", kind="pipeline_profile", preset=preset,
        data_dir=data_dir, image_size=224, calls=64)
  return items


def selected(items: List[Dict], only: Optional[str]) -> List[Dict]:
  """Keeps items whose name starts with one of the comma-separated ``only`` prefixes."""
  if not only:
    return items
  prefixes = [p.strip() for p in only.split(",") if p.strip()]
  return [it for it in items if any(it["name"].startswith(p) for p in prefixes)]


# -------------------------------------------------------------------------- running


def run_one(item: Dict, timeout: float) -> Dict:
  """Runs one measurement in a fresh subprocess → the result record."""
  with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
    out_path = f.name
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=_ROOT + os.pathsep +
             os.environ.get("PYTHONPATH", ""))
  if item["spec"].get("device") == "cpu":
    env["CUDA_VISIBLE_DEVICES"] = ""
  load_before = os.getloadavg()[0]
  start = time.time()
  proc = subprocess.Popen([sys.executable, "-m", "benchmarks.measure",
                           json.dumps(item["spec"]), out_path], cwd=_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  _, peak_mb, timed_out = child_memory.wait_with_peak(proc, timeout, poll_s=0.05)
  log = proc.stdout.read().decode("utf-8", "replace")
  record = {"name": item["name"], "group": item["group"], "spec": item["spec"],
            "wall_s": round(time.time() - start, 2),
            "peak_rss_mb": round(peak_mb, 1),
            "load_avg_1m_before": round(load_before, 2),
            "load_avg_1m_after": round(os.getloadavg()[0], 2)}
  try:
    with open(out_path) as f:
      metrics = json.load(f) if proc.returncode == 0 else None
  except (OSError, ValueError):
    metrics = None
  finally:
    if os.path.exists(out_path):
      os.remove(out_path)
  record["ok"] = metrics is not None
  record["metrics"] = metrics or {}
  record["error"] = None if metrics is not None else (
      ("timed out; " if timed_out else f"exit code {proc.returncode}; ") + log[-1500:])
  return record


PEER_HINT = ("the PyTorch peer needs torch and timm: pip install -r "
             "benchmarks/requirements-peer.txt (or point --peer_pythonpath at a folder holding "
             "them)")


def _worker(spec: Dict, env: Dict, log):
  return subprocess.Popen([sys.executable, "-m", "benchmarks.worker", json.dumps(spec)],
                          cwd=_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=log, text=True, bufsize=1)


def _answer(proc, prefix: str) -> Dict:
  for line in proc.stdout:
    if line.startswith(prefix + " "):
      return json.loads(line[len(prefix) + 1:])
  raise RuntimeError(f"worker exited (code {proc.wait()}) before answering {prefix}")


def run_pair(item: Dict, timeout: float, peer_pythonpath: str = "") -> Dict:
  """Times our train step and the peer's (``spec["peer_program"]``, default ``pytorch``)
  alternately: two long-lived :mod:`benchmarks.worker` processes are set up, then each
  round tells one and then the other (the order swaps every round) to run
  ``steps_per_round`` steps. Ratio = peer s/step ÷ our s/step (> 1: ours is faster)."""
  spec = item["spec"]
  base_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  ours_env = dict(base_env, PYTHONPATH=_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  peer_program = spec.get("peer_program", "pytorch")
  peer_env = dict(ours_env)
  # PyTorch's OpenMP threads spin while waiting by default; on a shared (loaded) CPU that
  # made its R50x1 forward 10x slower here (14.0 s vs 1.46 s, 2 threads, load 9). Passive
  # waiting is the fair setting there; a value set by the user is kept.
  peer_env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  if peer_pythonpath:
    peer_env["PYTHONPATH"] = _ROOT + os.pathsep + peer_pythonpath + os.pathsep + \
        os.environ.get("PYTHONPATH", "")
  peaks: Dict[str, float] = {}
  record = {"name": item["name"], "group": item["group"], "spec": spec, "ok": False,
            "skipped": False, "metrics": {}, "error": None,
            "load_avg_1m_before": round(os.getloadavg()[0], 2)}
  start = time.time()
  if peer_program == "pytorch":
    probe = subprocess.run([sys.executable, "-c", "import torch, timm"], env=peer_env,
                           cwd=_ROOT, capture_output=True, text=True)
    if probe.returncode != 0:
      record.update(skipped=True, error=f"skipped: {PEER_HINT}; "
                    f"{(probe.stderr.strip().splitlines() or [''])[-1][:200]}",
                    wall_s=0.0, peak_rss_mb=0.0,
                    load_avg_1m_after=round(os.getloadavg()[0], 2))
      return record
  common = {k: v for k, v in spec.items() if k not in ("kind", "rounds", "steps_per_round",
                                                       "peer_program")}
  logs = {name: tempfile.TemporaryFile("w+") for name in ("ours", "peer")}
  procs = {"ours": _worker({**common, "program": "ours"}, ours_env, logs["ours"]),
           "peer": _worker({**common, "program": peer_program}, peer_env, logs["peer"])}
  timer = threading.Timer(timeout, lambda: [p.kill() for p in procs.values()])
  timer.start()
  try:
    ready = {name: _answer(p, "READY") for name, p in procs.items()}
    times = {"ours": [], "peer": []}
    rounds, finite = [], True
    for r in range(spec["rounds"]):
      order = ("ours", "peer") if r % 2 == 0 else ("peer", "ours")
      this = {"load_avg_1m_before": round(os.getloadavg()[0], 2)}
      for name in order:
        procs[name].stdin.write(f"RUN {spec['steps_per_round']}\n")
        procs[name].stdin.flush()
        answer = _answer(procs[name], "TIMES")
        finite = finite and answer["finite_loss"]
        times[name] += answer["times"]
        this[f"{name}_median_s"] = statistics.median(answer["times"])
      this["ratio"] = this["peer_median_s"] / this["ours_median_s"]
      this["first"] = order[0]
      rounds.append(this)
    # Each worker's own high-water mark, read while it is still alive (see child_memory).
    peaks = {name: child_memory.vm_hwm_mb(p.pid) for name, p in procs.items()}
    for p in procs.values():
      p.stdin.write("QUIT\n")
      p.stdin.flush()
    ours_s, peer_s = statistics.median(times["ours"]), statistics.median(times["peer"])
    record["metrics"] = {
        "ours": {"median_s": ours_s, "times": times["ours"], **ready["ours"]},
        "peer": {"median_s": peer_s, "times": times["peer"], **ready["peer"],
                 "omp_wait_policy": peer_env["OMP_WAIT_POLICY"]},
        "ratio": peer_s / ours_s, "ratio_min": min(x["ratio"] for x in rounds),
        "ratio_max": max(x["ratio"] for x in rounds), "rounds": rounds,
        "finite_loss": finite}
    record["ok"] = finite
  except (RuntimeError, ValueError, OSError) as e:
    for name, log in logs.items():
      log.seek(0)
      e = f"{e}; {name} log: {log.read()[-700:]}"
    record["error"] = ("timed out; " if not timer.is_alive() else "") + str(e)
  finally:
    for p in procs.values():
      if record["error"] is not None:
        p.kill()
      p.wait()
    timer.cancel()
    for log in logs.values():
      log.close()
  record["wall_s"] = round(time.time() - start, 2)
  record["peak_rss_mb"] = round(max(peaks.values(), default=0.0), 1)
  record["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
  return record


# -------------------------------------------------------------------------- analysis


def _by_name(results: List[Dict]) -> Dict[str, Dict]:
  return {r["name"]: r for r in results if r["ok"]}


def add_ceiling_fractions(results: List[Dict]) -> None:
  """Adds ``fraction_of_ceiling`` (vs the same device's matmul of the step's dtype) and
  ``fraction_of_float32_ceiling`` to train-step results."""
  by = _by_name(results)
  for r in results:
    if not r["ok"] or r["spec"]["kind"] != "train_step":
      continue
    device = r["spec"]["device"]
    own = by.get(f"matmul/{device}/{r['spec']['precision']}")
    f32 = by.get(f"matmul/{device}/float32")
    achieved = r["metrics"]["achieved_flops"]
    if own:
      r["metrics"]["fraction_of_ceiling"] = achieved / own["metrics"]["best_flops"]
    if f32:
      r["metrics"]["fraction_of_float32_ceiling"] = achieved / f32["metrics"]["best_flops"]


def evaluate_targets(results: List[Dict], info: Dict) -> List[Dict]:
  """The issue-7 CPU targets, each with measured value and met / not met / not measured."""
  by = _by_name(results)
  out = []

  def target(name, goal, value, met, note=""):
    out.append({"target": name, "goal": goal, "measured": value,
                "met": None if value is None else bool(met), "note": note})

  for task in ("contrastive", "finetune"):
    r = by.get(f"train/cpu/{task}/r50x1/224/float32")
    frac = r["metrics"].get("fraction_of_ceiling") if r else None
    target(f"{task} step, R50x1 224 float32: fraction of float32 matmul ceiling",
           f">= {TARGET_STEP_FRACTION:.0%}", frac,
           frac is not None and frac >= TARGET_STEP_FRACTION)
    bf = by.get(f"train/cpu/{task}/r50x1/224/bfloat16")
    speedup = (bf["metrics"]["examples_per_s"] / r["metrics"]["examples_per_s"]
               if r and bf else None)
    target(f"{task} step, R50x1 224: mixed_bfloat16 faster than float32",
           "> 1.0x" if info.get("bf16_cpu") else "> 1.0x (CPU has no bf16 instructions)",
           speedup, speedup is not None and speedup > 1.0)
  for preset, goal in (("generic", TARGET_GENERIC_PER_S), ("cxr", TARGET_CXR_PER_S)):
    r = by.get(f"pipeline/contrastive/{preset}/png")
    value = r["metrics"]["examples_per_s"] if r else None
    target(f"contrastive pipeline, {preset}, 256-px PNG → 224: two-view examples/s",
           f">= {goal:g}", value, value is not None and value >= goal)
  for task in ("finetune", "contrastive"):
    r = by.get(f"peer/{task}/r50x1/224/float32")
    value = r["metrics"]["ratio"] if r else None
    target(f"{task} step, R50x1 224 float32: faster than the PyTorch peer (same run)",
           f">= {TARGET_PEER_RATIO:.1f}x (stretch {STRETCH_PEER_RATIO:.1f}x)", value,
           value is not None and value >= TARGET_PEER_RATIO)
  return out


# ---------------------------------------------------------------------------- report


def _fmt_flops(x: Optional[float]) -> str:
  return "" if x is None else f"{x / 1e9:.1f} GFLOP/s"


def _row(r: Dict) -> List[str]:
  m, kind = r["metrics"], r["spec"]["kind"]
  load = f"{r['load_avg_1m_before']:.1f}→{r['load_avg_1m_after']:.1f}"
  rss = f"{r['peak_rss_mb']:.0f}"
  if not r["ok"]:
    what = "SKIPPED" if r.get("skipped") else "FAILED"
    return [r["name"], f"{what}: " + (r["error"] or "").splitlines()[0][:80], "", "", rss, load]
  if kind == "matmul":
    sizes = ", ".join(f"{p['n']}: {p['best_flops'] / 1e9:.0f}" for p in m["per_size"])
    return [r["name"], f"best {_fmt_flops(m['best_flops'])} (per n, GFLOP/s: {sizes})",
            "", "", rss, load]
  if kind == "train_step":
    s = r["spec"]
    tf32 = ", TF32" if m.get("tf32_enabled") and s["precision"] == "float32" else ""
    what = (f"{m['examples_per_s']:.2f} ex/s (B={s['batch']}{tf32}, median {m['median_s']:.3f} s/step"
            + (f", {m['backbone_images_per_s']:.1f} backbone img/s" if s["task"] == "contrastive"
               else "") + ")")
    frac = m.get("fraction_of_ceiling")
    frac32 = m.get("fraction_of_float32_ceiling")
    fr = "" if frac is None else f"{frac:.0%}"
    if frac32 is not None and s["precision"] != "float32":
      fr += f" ({frac32:.0%} of f32)"
    return [r["name"], what, _fmt_flops(m["achieved_flops"]), fr, rss, load]
  if kind == "pipeline":
    return [r["name"], f"{m['examples_per_s']:.1f} ex/s ({m['cpu_ms_per_example']:.2f} CPU "
            f"ms/ex, {m['examples']} ex)", "", "", rss, load]
  if kind == "pipeline_profile":
    return [r["name"], "see profile below", "", "", rss, load]
  if kind == "peer_pair":
    return [r["name"], f"ours {m['ours']['median_s']:.3f} s/step, peer {m['peer']['median_s']:.3f}"
            f" s/step: ratio {m['ratio']:.2f}x (rounds {m['ratio_min']:.2f}–"
            f"{m['ratio_max']:.2f})", "", "", rss, load]
  return [r["name"], json.dumps(m)[:80], "", "", rss, load]


def markdown(report: Dict) -> str:
  info = report["machine"]
  lines = [f"# remedis_tf benchmarks — {report['date']}", "",
           f"Command: `{report['command']}`{' (QUICK mode: tiny sizes, numbers meaningless)' if report['quick'] else ''}",
           "",
           f"Machine: {info['cpu_model']}, {info['cores']} cores, {info['ram_gb']} GB RAM, "
           f"ISA {info.get('isa', 'unknown')} (flags {', '.join(info.get('cpu_flags', []))}); "
           f"TensorFlow {info.get('tf')}; "
           f"GPUs: {', '.join(info.get('gpus') or []) or 'none'}.", "",
           "| measurement | result | achieved | of ceiling | peak RSS MB | load 1m before→after |",
           "|---|---|---|---|---|---|"]
  for r in report["results"]:
    lines.append("| " + " | ".join(_row(r)) + " |")
  if report["targets"]:
    lines += ["", "## Targets", "", "| target | goal | measured | status |", "|---|---|---|---|"]
    for t in report["targets"]:
      v = t["measured"]
      shown = "—" if v is None else (f"{v:.1%}" if "fraction" in t["target"] else
                                     (f"{v:.2f}x" if "faster" in t["target"] or "peer" in
                                      t["target"] else f"{v:.1f}"))
      status = {None: "not measured", True: "MET", False: "NOT MET"}[t["met"]]
      lines.append(f"| {t['target']} | {t['goal']} | {shown} | {status} |")
  pairs = [r for r in report["results"] if r["ok"] and r["spec"]["kind"] == "peer_pair"]
  if pairs:
    peer = pairs[0]["metrics"]["peer"]
    lines += ["", "## Against the PyTorch peer (alternating, same run)", "",
              f"Peer: {peer.get('model')}, torch {peer.get('torch')}, timm {peer.get('timm')}, "
              f"{peer.get('threads')} threads. Ratio = peer s/step ÷ ours (> 1: ours faster); "
              "per-round ratios show the spread.", "",
              "| step | ours s/step | peer s/step | ratio | per-round ratios | load 1m per round |",
              "|---|---|---|---|---|---|"]
    for r in pairs:
      m, s_ = r["metrics"], r["spec"]
      lines.append(
          f"| {s_['task']} R50x1 {s_['image_size']} px B={s_['batch']} {s_['precision']} | "
          f"{m['ours']['median_s']:.3f} | {m['peer']['median_s']:.3f} | **{m['ratio']:.2f}x** | "
          + ", ".join(f"{x['ratio']:.2f}" for x in m["rounds"]) + " | "
          + ", ".join(f"{x['load_avg_1m_before']:.1f}" for x in m["rounds"]) + " |")
  profiles = [r for r in report["results"] if r["ok"] and
              (r["metrics"].get("profile") or r["metrics"].get("cpu_ms_per_call"))]
  if profiles:
    lines += ["", "## Where the time goes", ""]
    for r in profiles:
      m = r["metrics"]
      if "profile" in m:
        p = m["profile"]
        step = m["median_s"]
        lines.append(f"- `{r['name']}`: backbone forward {p['forward_s']:.3f} s, forward + "
                     f"backward {p['forward_backward_s']:.3f} s (backward "
                     f"{p['forward_backward_s'] - p['forward_s']:.3f} s), whole step "
                     f"{step:.3f} s → heads, loss and optimizer update ≈ "
                     f"{step - p['forward_backward_s']:.3f} s")
      else:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in m["cpu_ms_per_call"].items())
        lines.append(f"- `{r['name']}` (single-core CPU ms per call, ops applied "
                     f"unconditionally): {parts}")
  return "\n".join(lines) + "\n"


def _atomic_write(path: str, text: str) -> None:
  """Local results only, so plain files (no TensorFlow start in this process)."""
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true",
                      help="tiny sizes and few repeats: checks that the harness works (< 1 min)")
  parser.add_argument("--only", default="",
                      help="comma-separated name prefixes to run, e.g. matmul,train/cpu/finetune,"
                      "pipeline/contrastive,profile (default: everything)")
  parser.add_argument("--out_dir", default=DEFAULT_OUT,
                      help="where the JSON and latest.md are written")
  parser.add_argument("--data_dir", default="",
                      help="benchmark images (written if missing); default: a temporary folder")
  parser.add_argument("--timeout", type=float, default=900.0,
                      help="seconds after which one measurement is killed and marked failed")
  parser.add_argument("--jobs", type=int, default=0,
                      help="measurements run at once (default 1; 2 with --quick, whose numbers "
                      "are not meant to be read)")
  parser.add_argument("--peer_pythonpath", default="",
                      help="folder(s) put on PYTHONPATH of the PyTorch peer process only, e.g. "
                      "a `pip install --target` folder holding torch and timm (default: the "
                      "peer imports them from this Python's environment)")
  parser.add_argument("--num_images", type=int, default=0,
                      help="benchmark images to write (default 512, 16 with --quick)")
  args = parser.parse_args(argv)

  tmp = None
  data_dir = args.data_dir
  if not data_dir:
    tmp = tempfile.TemporaryDirectory(prefix="remedis_bench_")
    data_dir = tmp.name
  # The plan's GPU part needs the probe; the data need is the same with or without GPUs.
  needs_data = any(it["spec"]["kind"].startswith("pipeline")
                   for it in selected(plan(args.quick, data_dir, []), args.only))
  write = None
  if needs_data and not os.path.isdir(os.path.join(data_dir, "png")):
    write = [data_dir, args.num_images or (16 if args.quick else 512), 64 if args.quick else 256]
    print(f"[bench] writing {write[1]} {write[2]}-px PNGs and TFRecords to {data_dir}",
          flush=True)
  info = machine_info(write)
  items = selected(plan(args.quick, data_dir, info.get("gpus") or []), args.only)
  jobs = args.jobs or (2 if args.quick else 1)

  def one(it):
    if it["spec"]["kind"] == "peer_pair":
      record = run_pair(it, args.timeout, args.peer_pythonpath)
    else:
      record = run_one(it, args.timeout)
    status = "ok" if record["ok"] else ("skipped" if record.get("skipped") else "FAILED")
    print(f"[bench] {it['name']}: {status} in {record['wall_s']:.1f} s, peak RSS "
          f"{record['peak_rss_mb']:.0f} MB, load {record['load_avg_1m_before']:.1f}→"
          f"{record['load_avg_1m_after']:.1f}: "
          f"{json.dumps(record['metrics'])[:300] if record['ok'] else record['error'][-600:]}",
          flush=True)
    return record

  with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    results = list(pool.map(one, [it for it in items if it["group"] != "peer"]))
  results += [one(it) for it in items if it["group"] == "peer"]  # alone on the machine
  add_ceiling_fractions(results)
  now = datetime.datetime.now()
  report = {"schema_version": SCHEMA_VERSION, "date": now.isoformat(timespec="seconds"),
            "command": " ".join(["python -m benchmarks.run"] + (argv if argv is not None
                                                                  else sys.argv[1:])),
            "quick": args.quick, "machine": info, "results": results,
            "targets": [] if args.quick else evaluate_targets(results, info)}
  os.makedirs(args.out_dir, exist_ok=True)
  name = f"{machine_slug(info)}-{now.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}"
  json_path = os.path.join(args.out_dir, name + ".json")
  _atomic_write(json_path, json.dumps(report, indent=1, sort_keys=False) + "\n")
  _atomic_write(os.path.join(args.out_dir, "latest.md"), markdown(report))
  print(f"[bench] wrote {json_path} and {os.path.join(args.out_dir, 'latest.md')}")
  if tmp is not None:
    tmp.cleanup()
  return 0 if all(r["ok"] or r.get("skipped") for r in results) else 1


if __name__ == "__main__":
  sys.exit(main())
