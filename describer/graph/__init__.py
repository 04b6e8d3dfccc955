"""The process graph: the one structured result behind both jobs (describer/graph/model.py),
and its readers and renderers. Pure Python: nothing here imports Django or torch."""
