"""Batches, from the client's side and from S3 events.

- ``submit``: ``submit`` and ``retry``: discover, upload, queue, record
- ``ingest``: S3 events to jobs (the ingest Lambda ships it: standard library and boto3 only)
- ``records``: a batch's options and one entry per file, safe under concurrent writers
- ``tracking``: where batches stand, from listings
- ``completion``: a batch's end (``done.json``, the "finished" event) and stale paths
- ``download``: ``results``: a batch's transcripts to local files
- ``dead_letters``: the dead-letter queue: list, redrive
- ``progress``: progress hooks the CLI draws
"""
