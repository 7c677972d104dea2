"""Text data: tokenizers (`tokenizer`), pretraining corpora (`corpus`), GLUE (`glue`), SQuAD/XQuAD (`squad`)."""
