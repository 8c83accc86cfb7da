"""The task types a labelled set (or an unlabelled one) can have, in one small module.

Readers, manifests, losses, metrics and flags all name tasks by these strings; they live
here, below the pieces, so that a module needing only the names (``losses``,
``eval.task_metrics``) does not import the data package for them. Pure Python.
"""

TASK_TYPES = ("multilabel", "multiclass", "binary", "unlabelled")
# The tasks with labels (losses, metrics, classification heads).
LABELLED_TASKS = tuple(t for t in TASK_TYPES if t != "unlabelled")
