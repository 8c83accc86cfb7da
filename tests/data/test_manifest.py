"""Task names are defined once, in data/manifest.py."""

import pytest

from remedis_tf import losses
from remedis_tf.data import manifest
from remedis_tf.eval import task_metrics


def test_task_names_have_one_home():
  assert set(manifest.TASK_TYPES) == {"multilabel", "multiclass", "binary", "unlabelled"}
  assert set(manifest.LABELLED_TASKS) == set(manifest.TASK_TYPES) - {"unlabelled"}
  assert losses.TASKS is manifest.LABELLED_TASKS and task_metrics.TASKS is manifest.LABELLED_TASKS
  with pytest.raises(ValueError, match="task must be one of"):
    manifest.Manifest(records=(), task="regression")


@pytest.mark.parametrize("k, task", [(0, "unlabelled"), (1, "binary"), (2, "multilabel"),
                                     (14, "multilabel")])
def test_task_for_label_count(k, task):
  assert manifest.task_for_label_count(k) == task
