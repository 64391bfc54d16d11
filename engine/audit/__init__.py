"""The audit trail: records, their line format, the hash-chained log and its checks.

* ``record``     (Policy, candidates, Allocation) → the audit record (a JSON mapping)
* ``lineformat`` one record as one canonical line, hashed into the chain
* ``log``        append (locked, fsynced), read, checkpoints
* ``verify``     the chain and checkpoint checker
* ``replay``     re-run a logged decision through the façade (what-if)
* ``show``       human-readable views of records

The log and record modules never import the solver; ``replay`` goes through the façade.
"""
