"""The worker role: the Celery task ``whisperq.transcribe`` and the steps around it.

- ``runner``: the task's job, stage by stage: download, transcribe, write results
- ``failures``: error classification and retry rules
- ``packs``: a worker with a short job takes more short ones from the queue
- ``heartbeat``: SQS visibility heartbeat and hand-back
- ``instance``: spot notices, lifecycle hooks and scale-in protection (IMDS)
"""
