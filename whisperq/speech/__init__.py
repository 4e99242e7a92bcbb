"""Speech to text: no S3, no Celery; audio in, segments out.

- ``engine``: faster-whisper, loaded once per process, transcribing one file or a pack
- ``model_files``: finding, assembling and checking packaged models
- ``packing``: short files sharing one 30 s window, each word back in its own file
- ``diarization``: who spoke when on mono audio (speaker encoder and clustering)
"""
