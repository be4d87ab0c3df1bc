"""Personal data in the log: fields sealed with per-person data keys (crypto-shredding).

Every ``pii`` field is sealed at the edge with AES-256-GCM under the person's data key
(:mod:`~hub.privacy.sealing`, :mod:`~hub.privacy.fields`); data keys are stored wrapped by a
key-encryption key (:mod:`~hub.privacy.kek`) in a compacted topic
(:mod:`~hub.privacy.datakeys`, :mod:`~hub.privacy.keystore`). Forgetting a person deletes
their keys: every copy of their personal fields (log, archive, backups) becomes unreadable,
while the pseudonymous facts stay for statistics.
"""
