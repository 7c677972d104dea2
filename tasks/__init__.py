"""Data sets and downstream tasks: `tasks.text` (tokenizers, corpora, GLUE, SQuAD/XQuAD), `tasks.vision`
(CIFAR-10, MNIST, ImageFolder, digits, transforms), `tasks.audio` (16 kHz waveforms, keyword folders, LibriSpeech,
CTC, error rates, the espeak-ng corpus `python -m tasks.audio.corpus`) and `python -m tasks.inventory PATH`."""
