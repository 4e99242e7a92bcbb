"""PCI/PII redaction: finding card numbers and personal data in a transcript and tagging
them (pure functions), and the audio copy with those spans silenced (``audio``). The
vocabulary that options and settings validate against is ``whisperq.vocabulary``.
"""
