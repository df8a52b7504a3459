"""Speech: a recording becomes a timed, two-speaker `Call` (audio -> VAD -> ASR -> speakers -> roles).
Entry points: `transcribe.transcribe_file`, `transcribe.load_speech_config`, `asr.load_recognizer`; `cer` scores recognisers."""
