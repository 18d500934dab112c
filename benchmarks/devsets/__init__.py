"""Dev sets composed deterministically by code from media already on the machine (never committed):
``conversations`` for diarization, ``clips`` for face tracking."""
