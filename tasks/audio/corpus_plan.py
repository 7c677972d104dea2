"""What the spoken-word corpus says and who says it: speakers, their split, keywords and sentences (no audio here).

What it implements: the plan of `tasks.audio.corpus`, a small speech corpus synthesised with espeak-ng so that
keyword spotting and CTC recognition can be run end to end without downloading a data set.
- A *speaker* is one espeak-ng voice setting: an English accent (`-v en-us`, `en-gb-scotland`, ...), a voice
  variant (`+m1`..`+m7`, `+f1`..`+f5`: formant and pitch-range presets), a speed in words per minute (`-s`) and a
  base pitch 0-99 (`-p`). `draw_speakers` draws them with a seeded `random.Random`: each (accent, variant) pair is
  used by one speaker at most, and speakers are dealt to train, validation and test in order, so no voice timbre
  is heard in two splits (as Speech Commands and LibriSpeech keep speakers apart).
- Keywords: Speech Commands' ten command words (Warden 2018: yes, no, up, down, left, right, on, off, stop, go)
  plus the digits zero to nine, its other core words; `repeats` recordings per speaker and word, repeat r > 0 with
  the speed and pitch moved by a seeded jitter (+-10 words/min, +-5).
- Sentences: `sentences_per_speaker` random sentences of `min_words`..`max_words` words drawn from `WORDS`, a
  built-in list of short common English words (LibriSpeech's characters: letters and the apostrophe).
Everything is a pure function of `CorpusConfig` (the seed included): the same config gives the same plan.

Differences from the original: not a recording of people; synthetic speech has no noise, reverberation or
microphone variety, so it is a test bed for the pipeline and a small pretraining set, not a substitute for
Speech Commands or LibriSpeech.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from data2vec.config import config_error

SPLITS = ("train", "validation", "test")
# espeak-ng's English accents (its own voices, not the mbrola ones, which need the separate mbrola program)
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
          "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")  # espeak-ng's plain male/female
SPEED_RANGE = (130, 200)  # words per minute (espeak-ng's default: 175)
PITCH_RANGE = (30, 70)  # 0-99 (espeak-ng's default: 50)
SPEED_JITTER, PITCH_JITTER = 10, 5  # the change a repeat may make to its speaker's speed and pitch
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")  # Speech Commands' 10 words
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
KEYWORDS = COMMANDS + DIGITS
WORDS = (  # short common words for the sentences, in no particular order
    "the", "a", "an", "and", "but", "or", "of", "to", "in", "at", "by", "for", "from", "with", "over", "under",
    "after", "before", "man", "woman", "child", "dog", "cat", "bird", "horse", "house", "tree", "river", "road",
    "boat", "city", "garden", "window", "door", "table", "book", "letter", "morning", "evening", "night", "day",
    "year", "water", "fire", "light", "sound", "voice", "hand", "eye", "heart", "mind", "friend", "king", "queen",
    "ship", "sea", "sky", "sun", "moon", "star", "red", "green", "blue", "old", "young", "small", "great", "long",
    "little", "good", "dark", "bright", "cold", "warm", "quiet", "happy", "is", "was", "will", "can", "could",
    "would", "said", "saw", "heard", "found", "took", "gave", "made", "went", "came", "ran", "walked", "looked",
    "thought", "knew", "told", "asked", "he", "she", "it", "they", "we", "you", "his", "her", "their", "our",
    "very", "never", "always", "again", "now", "then", "there", "here", "it's", "don't", "i'm", "couldn't",
)


@dataclass(frozen=True)
class Speaker:
    """One espeak-ng voice setting; `id` is a stable hash of the (voice, variant) timbre."""

    voice: str  # accent, espeak-ng's -v (e.g. "en-gb-scotland")
    variant: str  # voice variant appended as -v voice+variant (e.g. "f3")
    speed: int  # words per minute, espeak-ng's -s
    pitch: int  # 0-99, espeak-ng's -p
    split: str  # train, validation or test

    @property
    def id(self) -> str:
        return hashlib.sha1(f"{self.voice}+{self.variant}".encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Utterance:
    """One file of the corpus: who says what, with which settings, and where it goes."""

    kind: str  # "keyword" or "sentence"
    speaker: Speaker
    text: str  # what espeak-ng is given (lower case)
    speed: int  # this recording's -s (the speaker's, or jittered for a repeat)
    pitch: int  # this recording's -p
    path: str  # relative to the corpus root, with "/" separators


@dataclass
class CorpusConfig:
    """How big the corpus is and the seed it is drawn from (the defaults: 1,080 recordings, 21.5 min of speech, about
    a minute to build with espeak-ng 1.51 on a 2-core machine)."""

    seed: int = 0  # every random choice (speakers, jitter, sentences) comes from this
    speakers: dict[str, int] = field(default_factory=lambda: {"train": 24, "validation": 6, "test": 6})  # per split
    keywords: tuple[str, ...] = KEYWORDS  # the words of the keyword-folder layout
    repeats: int = 1  # recordings per speaker and keyword (Speech Commands: often several)
    sentences_per_speaker: int = 10  # transcribed utterances per speaker
    min_words: int = 3  # words per sentence, at least
    max_words: int = 8  # words per sentence, at most

    def check(self) -> None:
        owner = "CorpusConfig"
        if set(self.speakers) != set(SPLITS) or any(n < 1 for n in self.speakers.values()):
            raise config_error(owner, "speakers", f"got {self.speakers}", "give every split of "
                               f"{SPLITS} at least one speaker")
        total, most = sum(self.speakers.values()), len(VOICES) * len(VARIANTS)
        if total > most:
            raise config_error(owner, "speakers", f"{total} speakers but only {most} distinct (voice, variant) "
                               "timbres", f"ask for at most {most} in all")
        if not self.keywords or any(not w.isalpha() or w != w.lower() for w in self.keywords):
            raise config_error(owner, "keywords", f"got {self.keywords}", "give lower-case words of letters only")
        if len(set(self.keywords)) != len(self.keywords):
            raise config_error(owner, "keywords", "a word is repeated", "list each word once")
        if self.repeats < 1 or self.sentences_per_speaker < 0:
            raise config_error(owner, "repeats", f"repeats {self.repeats}, sentences {self.sentences_per_speaker}",
                               "repeats >= 1 and sentences_per_speaker >= 0")
        if not 1 <= self.min_words <= self.max_words:
            raise config_error(owner, "min_words", f"{self.min_words}..{self.max_words} words",
                               "1 <= min_words <= max_words")


def draw_speakers(cfg: CorpusConfig) -> list[Speaker]:
    """Distinct (voice, variant) timbres in a seeded order, dealt to train, then validation, then test."""
    cfg.check()
    rng = random.Random(cfg.seed)
    timbres = [(v, k) for v in VOICES for k in VARIANTS]
    rng.shuffle(timbres)
    splits = [s for s in SPLITS for _ in range(cfg.speakers[s])]
    return [Speaker(voice, variant, rng.randint(*SPEED_RANGE), rng.randint(*PITCH_RANGE), split)
            for (voice, variant), split in zip(timbres, splits, strict=False)]


def sentence(rng: random.Random, min_words: int, max_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))


def plan_corpus(cfg: CorpusConfig) -> list[Utterance]:
    """Every file of the corpus: keyword recordings (`keywords/<word>/<speaker>_nohash_<r>.wav`) and sentences
    (`transcribed/<split>/<speaker>/1/<speaker>-1-<n>.flac`), in a fixed order."""
    speakers = draw_speakers(cfg)
    rng = random.Random(f"{cfg.seed}/utterances")  # a stream of its own, apart from the speakers' draw
    plan = []
    for spk in speakers:
        for word in cfg.keywords:
            for r in range(cfg.repeats):
                speed = spk.speed + (rng.randint(-SPEED_JITTER, SPEED_JITTER) if r else 0)
                pitch = min(99, max(0, spk.pitch + (rng.randint(-PITCH_JITTER, PITCH_JITTER) if r else 0)))
                plan.append(Utterance("keyword", spk, word, speed, pitch, f"keywords/{word}/{spk.id}_nohash_{r}.wav"))
        for n in range(cfg.sentences_per_speaker):
            path = f"transcribed/{spk.split}/{spk.id}/1/{spk.id}-1-{n:04d}.flac"
            plan.append(Utterance("sentence", spk, sentence(rng, cfg.min_words, cfg.max_words), spk.speed, spk.pitch,
                                  path))
    return plan
