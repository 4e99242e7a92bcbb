"""Speech to text: no S3, no Celery; audio in, segments out.

- ``engine``: faster-whisper, loaded once per process, transcribing one file or a pack
- ``audio``: decoding any file to 16 kHz samples, window by window; stereo mixed or split
- ``guard``: telling text Whisper made up (silence, tones, loops) from real speech
- ``languages``: each segment's language in a multilingual file; languages' shares
- ``segments``: faster-whisper's segments as whisperq stores them, in the file's time
- ``model_files``: finding, assembling and checking packaged models
- ``packing``: short files sharing one 30 s window, each word back in its own file
- ``diarization``: who spoke when on mono audio (windows, clustering, words to speakers)
- ``speaker_encoders``: speech windows to voice prints (CAM++ by default, GE2E)
- ``batch_language``: a batch's language learned from its first short files, for packing
"""
