"""Speech data and tasks: 16 kHz waveforms (`waveform`), padded batches (`batching`), keyword folders
(`keywords`: Speech Commands), transcribed speech (`librispeech`: LibriSpeech's layout), the CTC character
vocabulary (`vocab`), CTC loss and greedy decoding (`ctc`), word and character error rates (`error_rates`),
`audio_datasets` (a task's splits found by folder layout: `registry`), and the espeak-ng spoken-word corpus
builder (`corpus`, `python -m tasks.audio.corpus`). Reading files needs the optional `soundfile` package
(`pip install -e ".[audio]"`); the layouts and the espeak-ng install: `tasks/audio/README.md`."""

from .batching import AudioCollate, pad_targets, pad_waveforms
from .ctc import CTCObjective, CTCScores, collapse, ctc_loss, greedy_decode, lengths_from_padding_mask
from .error_rates import char_error_rate, edit_distance, word_error_rate
from .keywords import KeywordDataset, detect_keyword_layout, hash_split, load_keywords
from .librispeech import TranscribedSpeech, Utterance, load_transcribed
from .registry import audio_datasets
from .vocab import CharVocab
from .waveform import SAMPLE_RATE, RandomCrop, load_audio, normalise, random_crop, read_audio, resample, to_mono

__all__ = [
    "AudioCollate", "CTCObjective", "CTCScores",
    "pad_targets", "pad_waveforms", "collapse", "ctc_loss", "greedy_decode",
    "lengths_from_padding_mask", "char_error_rate", "edit_distance", "word_error_rate", "KeywordDataset",
    "detect_keyword_layout", "hash_split", "load_keywords", "TranscribedSpeech", "Utterance", "load_transcribed",
    "audio_datasets",
    "CharVocab", "SAMPLE_RATE", "RandomCrop", "load_audio", "normalise", "random_crop", "read_audio", "resample",
    "to_mono",
]
