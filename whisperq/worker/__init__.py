"""The worker role: the Celery task ``whisperq.transcribe`` and the steps around it.

- ``app``: the Celery app, the task and its signal wiring; ``run_worker``
- ``runner``: ``JobRunner``, one job from payload to results, composing the parts below
- ``clients``: a pool process's boto3 clients, instance type and visibility timeout
- ``models``: the worker's model, warmed up per process, and the other models it allows
- ``refusal``: an invalid payload, never run, refused with an error record where safe
- ``stages``: a job's stages, each retried on its own with backoff (``StageFailed``)
- ``delivery``: the input downloaded; the transcript redacted, uploaded, stale errors gone
- ``results``: what a job leaves in the bucket: renderings, result JSON, error records
- ``metrics``: jobs and audio seconds for the dashboard (CloudWatch)
- ``batch_end``: a batch's done.json (and event) once the queue has run dry and it is finished
- ``pack_runner``: a pack of short jobs transcribed sharing windows, each settled alone
- ``packs``: a worker with a short job takes more short ones from the queue
- ``failures``: error classification and retry rules
- ``heartbeat``: SQS visibility heartbeat and hand-back
- ``shutdown``: on stopping, jobs received but not started go back (``StartGate``)
- ``instance_guard``: spot notices, the lifecycle hook and scale-in protection, in the main process
- ``instance``: spot notices, lifecycle hooks and scale-in protection (IMDS)
"""
