"""The audit trail: records, their line format, the hash-chained log and its checks.

* ``record``     (Policy, candidates, Allocation) → the audit record (a JSON mapping)
* ``lineformat`` one record as one canonical line, hashed into the chain
* ``log``        append (locked, fsynced), read, checkpoints
* ``verify``     the chain and checkpoint checker
* ``merkle``     RFC 6962 tree heads, inclusion and consistency proofs (pure)
* ``note``       Ed25519 keys and C2SP signed notes (checkpoints, key rotations)
* ``signing``    the writer's signed checkpoints in ``<log>.checkpoints``
* ``proofs``     verify a log against its signed checkpoints; prove / check one decision
* ``replay``     re-run a logged decision through the façade (what-if)
* ``show``       human-readable views of records

The log and record modules never import the solver; ``replay`` goes through the façade.
"""
