"""Data sets and downstream tasks: `tasks.text` (tokenizers, corpora, GLUE, SQuAD/XQuAD), `tasks.vision`
(CIFAR-10, MNIST, ImageFolder, digits, transforms) and `python -m tasks.inventory PATH`."""
