"""The config of `quality text_stats { ... }`: what `herd check` validates, with its ranges.

Loaded by herd through the `herd.components` entry-point group. Only herd's spec-language
package is imported here, so checking a spec stays fast and never imports torch.
"""

from __future__ import annotations

from pydantic import Field

from herdlang.components import component
from herdlang.types import CallModel, Fraction, Int


@component("quality", "text_stats")
class TextStats(CallModel):
    """Prose-likeness from two statistics: the share of letters among the visible
    characters (tables, logs and number dumps have few) and the mean words per line
    (menus, tag lists and link lists have short lines)."""

    # keep a document when its score is at least this (herd reads `min_score` as the
    # decision; the other fields change the scores themselves)
    min_score: Fraction = Field(0.5, ge=0, le=1)
    # the share of letters at which that half of the score reaches 1 (prose: ~80%)
    letters: Fraction = Field(0.75, gt=0, le=1)
    # the mean number of words per non-blank line at which that half reaches 1
    line_words: Int = Field(8, ge=1)
