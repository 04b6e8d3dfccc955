"""Everything that imports torch lives in this package; only the GPU worker imports it.

Keep this file free of imports: ``describer.inference.errors`` is imported by the web process.
"""
