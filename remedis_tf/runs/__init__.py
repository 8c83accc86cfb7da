"""Orchestration: the library calls that train, evaluate, sweep and embed (what the
binaries and the demo run).

* :mod:`remedis_tf.runs.stages` — the three REMEDIS stages and model selection;
  rebuilding a trained classifier from its run directory.
* :mod:`remedis_tf.runs.classifier` — loading a classifier from any model source;
  exporting a run's classifier (SavedModel, Keras preset).
* :mod:`remedis_tf.runs.evaluate` — evaluating a classifier on named sets.
* :mod:`remedis_tf.runs.sweep` — the data-efficiency sweep.
* :mod:`remedis_tf.runs.embed`, :mod:`remedis_tf.runs.frozen` — embedding export and the
  frozen-feature comparison of models.
* :mod:`remedis_tf.runs.demo` (+ :mod:`remedis_tf.runs.demo_report`) — the end-to-end demo.

This package sits above ``train``, ``weights``, ``eval``, ``data`` and ``models``: it may
import any of them, none of them imports it.
"""
