"""The labelled corpus: real programs in network namespaces, recorded as pcaps + labels.tsv.

`python -m egress.corpus generate --out DIR --scale small|full` (root); see generate.py.
"""
