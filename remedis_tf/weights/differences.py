"""One-line descriptions of how stored weights differ from the model they should fill."""

from __future__ import annotations

from typing import Callable, Hashable, Mapping, Sequence, Tuple

MAX_LISTED = 4  # entries listed per kind of difference, so the message stays one line


def shape_differences(expected: Mapping[Hashable, Tuple[int, ...]],
                      found: Mapping[Hashable, Tuple[int, ...]]
                      ) -> Tuple[list, list, list]:
  """``(missing, unexpected, mismatched)`` keys of ``found`` against ``expected`` (key →
  shape): missing and mismatched in ``expected``'s order, unexpected sorted."""
  missing = [k for k in expected if k not in found]
  unexpected = sorted(k for k in found if k not in expected)
  mismatched = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
  return missing, unexpected, mismatched


def describe_differences(missing: Sequence[Hashable], unexpected: Sequence[Hashable],
                         mismatched: Sequence[Hashable],
                         expected: Mapping[Hashable, Tuple[int, ...]],
                         found: Mapping[Hashable, Tuple[int, ...]],
                         name: Callable[[Hashable], str] = str, noun: str = "") -> str:
  """``"N shape mismatch(es): k expected (..) found (..); ... | N missing…: … | …"``.

  Args:
    missing / unexpected / mismatched: keys of each kind, in the order to list them.
    expected, found: key → shape in the model and in the stored weights.
    name: renders a key. noun: appended to "missing"/"unexpected" (e.g. " key(s)").
  Returns:
    The non-empty parts joined by `` | `` (empty string when nothing differs).
  """
  def listed(keys, fmt):
    more = f" (+{len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else ""
    return "; ".join(fmt(k) for k in keys[:MAX_LISTED]) + more

  parts = []
  if mismatched:
    parts.append(f"{len(mismatched)} shape mismatch(es): " + listed(
        mismatched, lambda k: f"{name(k)} expected {expected[k]} found {found[k]}"))
  if missing:
    parts.append(f"{len(missing)} missing{noun}: " + listed(
        missing, lambda k: f"{name(k)} expected {expected[k]}"))
  if unexpected:
    parts.append(f"{len(unexpected)} unexpected{noun}: " + listed(
        unexpected, lambda k: f"{name(k)} found {found[k]}"))
  return " | ".join(parts)
