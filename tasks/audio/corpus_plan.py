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
- Harder keywords (off by default; `CORPUS_PRESETS["study"]` turns them on): every keyword recording trimmed of its
  silence and placed at a random offset inside a fixed window (`window_seconds`, Speech Commands' 1 s), with
  background noise of a random kind (`noise`: white, pink, brown, or babble made of other speakers' sentences of the
  same split) at a random SNR (`snr_db`); a `Mix` per recording, drawn from a seeded stream of its own, records it.
  Speech Commands' other 15 words (`AUXILIARY`, several close to the 20: "tree" / "three", "dog" / "down") make 35.
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

from .noise import NOISE_KINDS

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
# Speech Commands v2's other 15 words (Warden 2018, section 3): with the 20 above, its 35; several sound alike
# ("tree" / "three", "bed" / "bird", "dog" / "down", "learn" / "left", "follow" / "four", "off" / "up")
AUXILIARY = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow", "backward", "forward",
             "follow", "learn", "visual")
SPEECH_COMMANDS_35 = KEYWORDS + AUXILIARY
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
class Mix:
    """How one keyword recording is made harder (`tasks.audio.noise`): placed in a fixed window, noise added."""

    offset: float  # where the trimmed word starts inside the window, as a fraction of the free room (0 = start)
    noise: str | None  # "white", "pink", "brown", "babble" or None (no noise)
    snr_db: float  # signal-to-noise ratio of the mix (speech power while active / noise power)
    noise_seed: int  # seeds the noise samples (and the babble stretches)
    babble: tuple[str, ...] = ()  # with babble: the sentence recordings (corpus paths) of the other talkers


@dataclass(frozen=True)
class Utterance:
    """One file of the corpus: who says what, with which settings, and where it goes."""

    kind: str  # "keyword" or "sentence"
    speaker: Speaker
    text: str  # what espeak-ng is given (lower case)
    speed: int  # this recording's -s (the speaker's, or jittered for a repeat)
    pitch: int  # this recording's -p
    path: str  # relative to the corpus root, with "/" separators
    mix: Mix | None = None  # keywords of a corpus with a window or noise: how the recording is changed


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
    # --- harder keywords (tasks.audio.noise; all off by default: the clean corpus) ---------------------------
    window_seconds: float | None = None  # None = each keyword as long as espeak-ng makes it; else trimmed and placed
    #   at a seeded random offset inside a window of this length (Speech Commands: 1 s)
    noise: tuple[str, ...] = ()  # noise kinds drawn per keyword recording ("white", "pink", "brown", "babble");
    #   () = no noise
    snr_db: tuple[float, float] = (0.0, 20.0)  # the SNR of each noisy recording, uniform in this range (dB)
    babble_talkers: int = 3  # babble: sentences of this many other speakers of the same split, summed

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
        self.check_mixing(owner)

    def check_mixing(self, owner: str) -> None:
        """The harder-keyword fields (window, noise kinds, SNR range, babble's talkers)."""
        if self.window_seconds is not None and not 0.1 <= self.window_seconds <= 10:
            raise config_error(owner, "window_seconds", f"got {self.window_seconds}", "use None or e.g. 1.0")
        unknown = sorted(set(self.noise) - set(NOISE_KINDS))
        if unknown:
            raise config_error(owner, "noise", f"unknown kinds {unknown}", f"choose among {NOISE_KINDS}")
        if self.noise and self.window_seconds is None:
            raise config_error(owner, "noise", "noise needs a fixed window", "set window_seconds (e.g. 1.0)")
        low, high = self.snr_db
        if low > high:
            raise config_error(owner, "snr_db", f"the range {self.snr_db} is empty", "give (low, high), low <= high")
        if "babble" in self.noise:
            fewest = min(self.speakers.values())
            if self.sentences_per_speaker < 1 or fewest < 2 or self.babble_talkers < 1:
                raise config_error(owner, "noise", "babble needs other talkers' sentences: sentences_per_speaker "
                                   f"{self.sentences_per_speaker}, {fewest} speakers in the smallest split, "
                                   f"babble_talkers {self.babble_talkers}", "give sentences_per_speaker >= 1, "
                                   "2+ speakers per split and babble_talkers >= 1, or drop babble")


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


def sentence_path(spk: Speaker, n: int) -> str:
    return f"transcribed/{spk.split}/{spk.id}/1/{spk.id}-1-{n:04d}.flac"


def draw_mix(cfg: CorpusConfig, rng: random.Random, spk: Speaker, speakers: list[Speaker]) -> Mix | None:
    """The window offset, noise kind, SNR and noise seed of one keyword recording (None for the clean corpus)."""
    if cfg.window_seconds is None:
        return None
    offset = rng.random()
    kind = rng.choice(cfg.noise) if cfg.noise else None
    snr = round(rng.uniform(*cfg.snr_db), 2)
    seed = rng.getrandbits(32)
    sources: tuple[str, ...] = ()
    if kind == "babble":  # other talkers of the same split only: no voice is heard outside its split
        others = [s for s in speakers if s.split == spk.split and s.id != spk.id]
        talkers = rng.sample(others, min(cfg.babble_talkers, len(others)))
        sources = tuple(sentence_path(t, rng.randrange(cfg.sentences_per_speaker)) for t in talkers)
    return Mix(round(offset, 4), kind, snr, seed, sources)


def plan_corpus(cfg: CorpusConfig) -> list[Utterance]:
    """Every file of the corpus: keyword recordings (`keywords/<word>/<speaker>_nohash_<r>.wav`) and sentences
    (`transcribed/<split>/<speaker>/1/<speaker>-1-<n>.flac`), in a fixed order. The harder-keyword choices come
    from a stream of their own, so a clean config's plan does not change when they exist."""
    speakers = draw_speakers(cfg)
    mixing = random.Random(f"{cfg.seed}/mixing")
    rng = random.Random(f"{cfg.seed}/utterances")  # a stream of its own, apart from the speakers' draw
    plan = []
    for spk in speakers:
        for word in cfg.keywords:
            for r in range(cfg.repeats):
                speed = spk.speed + (rng.randint(-SPEED_JITTER, SPEED_JITTER) if r else 0)
                pitch = min(99, max(0, spk.pitch + (rng.randint(-PITCH_JITTER, PITCH_JITTER) if r else 0)))
                plan.append(Utterance("keyword", spk, word, speed, pitch, f"keywords/{word}/{spk.id}_nohash_{r}.wav",
                                      draw_mix(cfg, mixing, spk, speakers)))
        for n in range(cfg.sentences_per_speaker):
            path = sentence_path(spk, n)
            plan.append(Utterance("sentence", spk, sentence(rng, cfg.min_words, cfg.max_words), spk.speed, spk.pitch,
                                  path))
    return plan


# Named corpus settings (`python -m tasks.audio.corpus --preset NAME`), one row per preset, a comment per change
CORPUS_PRESETS: dict[str, dict] = {
    "clean": {},  # CorpusConfig's defaults: 20 keywords as long as espeak-ng says them, no noise (easy)
    "study": dict(  # the speech study's corpus (benchmarks/studies/README.md); measured in tasks/audio/README.md
        keywords=SPEECH_COMMANDS_35,  # Speech Commands' 35 words, several alike
        speakers={"train": 60, "validation": 12, "test": 12},  # 84 of the 96 timbres
        repeats=2,  # two takes per speaker and word (speed and pitch jittered)
        sentences_per_speaker=4,  # the babble's material (and a little CTC data)
        window_seconds=1.0,  # Speech Commands' one-second clips, the word anywhere inside
        noise=("pink", "brown", "babble"),  # one kind per recording
        snr_db=(0.0, 20.0),  # uniform per recording: the floor's linear probe reads 60.7 % of validation
    ),
}
