"""Retrieval for ``ctxbudget pack``: the hierarchical index, search over it, and packing.

* ``index``  documents → a hierarchy of nodes (document, section, paragraph, sentence)
* ``search`` BM25 (and optional dense) scores over the index
* ``pack``   index + search + allocate + audit, the main job
"""
