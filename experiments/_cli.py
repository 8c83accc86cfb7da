"""Tiny shared helper for the binaries: user errors become one line and exit code 2."""

from __future__ import annotations

import sys
from typing import Callable

from absl import app, logging

from remedis_tf.errors import RemedisError


def run_main(main_fn: Callable) -> None:
  """``app.run(main_fn)``, printing ``error: <message>`` to stderr and exiting 2 on RemedisError."""

  def wrapped(argv):
    # TF's Python-side INFO logs (e.g. checkpoint sharding) would drown the progress lines.
    logging.set_verbosity(logging.WARNING)
    try:
      return main_fn(argv)
    except RemedisError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(wrapped)
