"""whisperq: batch speech-to-text on S3, SQS and spot workers."""

__version__ = "0.1.0"
