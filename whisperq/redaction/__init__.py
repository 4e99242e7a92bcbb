"""PCI/PII redaction: finding card numbers and personal data in a transcript and tagging
them (pure functions over ``Segment``s, no I/O, no model), and the audio copy with those
spans silenced. The vocabulary that options and settings validate against (entity types,
the ``pci``/``pii`` groups, user pattern names) is ``whisperq.vocabulary``.

Modules, in the order a transcript goes through them:

- ``tokens``: the transcript as ``Token``s, one per word (``tokenize``).
- ``numbers``: digits and number words to digit runs (``parse_numbers``, ``digit_runs``),
  Luhn and phone shapes, the word lists around numbers.
- ``cues``: cue phrases ("card", "security code", ...) and the nearest one in reach.
- ``detection``: the detectors: ``detect`` turns runs and token patterns into ``Entity``
  spans.
- ``rewriting``: ``redact``: ``[TYPE]`` tags in the text and words, and the list of what
  was redacted (times and types, never values).
- ``audio``: the audio copy with the redacted spans silenced.

How it works, in four steps:

1. **Tokens** (``tokens``). Every segment becomes ``Token``s: one per ``Segment.words``
   entry when the segment has words (their timings), otherwise its text is split on
   whitespace and each token's times are *interpolated by character position*: a token
   spanning characters ``[a, b)`` of a text of length ``L`` gets
   ``start + (end - start) * a / L`` to ``start + (end - start) * b / L``. Rough, but
   enough for the redaction list's times.
2. **Streams** (``detection``). Tokens are grouped into one stream per
   ``(speaker, channel)`` in transcript order, so a number split across segments of the
   same voice is one run. In a split-stereo call the agent's interjections ("mm-hm",
   "yes") are in the other channel, so they do not cut the customer's digits; in a mono
   call both voices are one stream, and interjections in the filler list are bridged like
   "uh". Cue words ("card", "security code", ...) are looked up by *time* across all
   streams (``cues``), because the agent asks ("the long number on the card?") and the
   customer answers on the other channel.
3. **Normalisation** (``numbers``). Digits ("4532", "4532-0151", "12/27"), number words
   ("four five", "forty two", "double four", "triple seven", "nine thousand", "oh") become
   digit runs; fillers and restarts ("uh", "sorry, let me start again", "slash") inside a
   run are bridged (at most ``numbers.MAX_BRIDGE`` tokens), so a restart makes the whole
   neighbourhood one run. Each digit remembers the tokens it came from
   (``DigitRun.sources``).
4. **Detectors** (``detection``) turn runs and token patterns into ``Entity`` spans, and
   ``rewriting.redact`` rewrites text and words with ``[TYPE]`` tags and lists times,
   never values.

Rules favour over-redacting near cue words over leaking (see ``detection.detect``).

``vocabulary_filter`` applies a batch's list of words that must not be stored (masked,
removed or tagged), after redaction.
"""
