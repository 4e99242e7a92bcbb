"""The stacks whisperq talks to.

- ``local``: the embedded stack: moto server, workers, ingest, on 127.0.0.1
- ``from_stack``: ``config from-stack``: a deployed stack's outputs into the config file
"""
