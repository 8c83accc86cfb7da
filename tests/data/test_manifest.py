"""Task names are defined once, in remedis_tf/tasks.py (data/manifest.py re-exports them)."""

import pytest

from remedis_tf import losses, tasks
from remedis_tf.data import manifest
from remedis_tf.eval import task_metrics


def test_task_names_have_one_home():
  assert set(tasks.TASK_TYPES) == {"multilabel", "multiclass", "binary", "unlabelled"}
  assert set(tasks.LABELLED_TASKS) == set(tasks.TASK_TYPES) - {"unlabelled"}
  assert manifest.TASK_TYPES is tasks.TASK_TYPES
  assert manifest.LABELLED_TASKS is tasks.LABELLED_TASKS
  assert losses.TASKS is tasks.LABELLED_TASKS and task_metrics.TASKS is tasks.LABELLED_TASKS
  with pytest.raises(ValueError, match="task must be one of"):
    manifest.Manifest(records=(), task="regression")


@pytest.mark.parametrize("k, task", [(0, "unlabelled"), (1, "binary"), (2, "multilabel"),
                                     (14, "multilabel")])
def test_task_for_label_count(k, task):
  assert manifest.task_for_label_count(k) == task
