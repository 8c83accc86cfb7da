"""What LARS does to one variable, read from its private per-variable tables (test helper:
the optimizer exposes no public introspection, and the library needs none)."""


def exclusion_flags(opt, variable) -> tuple:
  """``(uses_weight_decay, uses_layer_adaptation)`` of ``variable`` in a built LARS ``opt``."""
  index = opt._get_variable_index(variable)  # pylint: disable=protected-access
  return opt._use_wd_by_index[index], opt._adapt_by_index[index]  # pylint: disable=protected-access
