"""An example herd plugin: the `text_stats` quality classifier.

Two modules, because herd keeps the spec language and the runtime apart: `schema` is the
config `herd check` validates (imported through the `herd.components` entry-point group),
`classifier` the code `herd run` calls (the `herd.quality` group). Both use the name
`text_stats`, the name a spec writes: `quality text_stats { min_score = 0.5 }`.
"""
