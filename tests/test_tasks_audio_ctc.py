"""CTC character recognition pieces of tasks.audio: the character vocabulary (parity with transformers'
Wav2Vec2CTCTokenizer), greedy decoding, the CTC loss over padded frames (against a brute-force sum over every
alignment written here, and a value computed by hand), and WER / CER (worked examples computed by hand, and a
recursive Levenshtein written here)."""

import functools
import itertools
import math
import random

import pytest
import torch

from tasks.audio import (
    AudioCollate,
    CharVocab,
    char_error_rate,
    collapse,
    ctc_loss,
    edit_distance,
    greedy_decode,
    lengths_from_padding_mask,
    word_error_rate,
)
from tasks.audio.error_rates import char_errors, word_errors

# the released facebook/wav2vec2-base-960h (and data2vec-audio-base-960h) vocab.json, as published
RELEASED_LIBRISPEECH_VOCAB = {
    "<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 5, "T": 6, "A": 7, "O": 8, "N": 9, "I": 10, "H": 11,
    "S": 12, "R": 13, "D": 14, "L": 15, "U": 16, "M": 17, "W": 18, "C": 19, "F": 20, "G": 21, "Y": 22, "P": 23,
    "B": 24, "V": 25, "K": 26, "'": 27, "X": 28, "J": 29, "Q": 30, "Z": 31,
}


# ---- vocabulary -----------------------------------------------------------------------------------------------

def test_librispeech_vocab_is_the_released_table(tmp_path):
    vocab = CharVocab.librispeech()
    assert vocab.index == RELEASED_LIBRISPEECH_VOCAB
    vocab.save(tmp_path / "vocab.json")
    assert CharVocab.load(tmp_path / "vocab.json").symbols == vocab.symbols


def hf_tokenizer(vocab: CharVocab, tmp_path):
    from transformers import Wav2Vec2CTCTokenizer

    vocab.save(tmp_path / "vocab.json")
    return Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"))


def test_encoding_matches_transformers_tokenizer(tmp_path):
    vocab = CharVocab.librispeech()
    tokenizer = hf_tokenizer(vocab, tmp_path)
    for text in ("HELLO WORLD", "IT'S A DOG", "Q", "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"):
        assert vocab.encode(text) == tokenizer(text).input_ids
        assert vocab.encode(text.lower()) == vocab.encode(text)
    assert vocab.encode("  two   spaces ") == vocab.encode("TWO SPACES")  # whitespace normalised
    assert vocab.encode("A1") == [vocab.index["A"], vocab.index["<unk>"]]


def test_collapsed_decoding_matches_transformers_ctc_decode(tmp_path):
    """HF's decode of frame-level ids groups repeats and drops the blank, as our collapse + decode; HF keeps runs of
    spaces and edge spaces, ours merges them, so HF's text is compared after merging whitespace."""
    vocab = CharVocab.librispeech()
    tokenizer = hf_tokenizer(vocab, tmp_path)
    rng = random.Random(0)
    frequent = [0, 0, 0, 4, *range(5, 32)]  # blanks common, as in a CTC output; no <s>, </s>, <unk>
    for _ in range(200):
        frames = [rng.choice(frequent) for _ in range(rng.randint(1, 40))]
        assert vocab.decode(collapse(frames)) == " ".join(tokenizer.decode(frames).split())


def test_vocab_from_texts_orders_by_frequency():
    vocab = CharVocab.from_texts(["abba", "b c|"])
    # specials, "|", then b (3), a (2), c (1); a "|" in the text is not a second separator
    assert vocab.symbols == ["<pad>", "<s>", "</s>", "<unk>", "|", "B", "A", "C"]
    assert vocab.decode(vocab.encode("ab c")) == "AB C"


def test_vocab_refuses_bad_tables():
    with pytest.raises(ValueError, match="id 0 must be the blank"):
        CharVocab(["|", "<pad>", "A"])
    with pytest.raises(ValueError, match="repeated"):
        CharVocab(["<pad>", "|", "A", "A"])
    with pytest.raises(ValueError, match="word separator"):
        CharVocab(["<pad>", "A"])
    with pytest.raises(ValueError, match="no <unk>"):
        CharVocab(["<pad>", "|", "A"]).encode("B")


# ---- greedy decoding ------------------------------------------------------------------------------------------

def test_collapse_worked_examples():
    # blank = 0; by hand: merge runs, then drop blanks
    assert collapse([1, 1, 0, 1, 2]) == [1, 1, 2]  # a blank separates two 1s
    assert collapse([1, 1, 1, 2, 2]) == [1, 2]
    assert collapse([0, 0, 0]) == []
    assert collapse([3, 0, 0, 3, 3, 0, 4]) == [3, 3, 4]
    assert collapse([]) == []


def one_hot_logits(rows: list[list[int]], vocab_size: int) -> torch.Tensor:
    """(B, T, V) scores whose argmax at (b, t) is rows[b][t]."""
    logits = torch.randn(len(rows), len(rows[0]), vocab_size)
    for b, row in enumerate(rows):
        for t, k in enumerate(row):
            logits[b, t, k] = logits[b, t].max() + 1.0
    return logits


def test_greedy_decode_reads_only_the_real_frames():
    rows = [[1, 1, 0, 2, 2, 3], [2, 0, 2, 3, 3, 3]]
    padding_mask = torch.tensor([[False] * 6, [False, False, False, True, True, True]])
    logits = one_hot_logits(rows, 5)
    assert greedy_decode(logits, padding_mask) == [[1, 2, 3], [2, 2]]  # row 2's padded 3s are not read
    assert greedy_decode(logits) == [[1, 2, 3], [2, 2, 3]]
    assert greedy_decode(torch.log_softmax(logits, -1), padding_mask) == [[1, 2, 3], [2, 2]]


def test_padding_mask_must_be_bool_and_right_padded():
    assert lengths_from_padding_mask(torch.tensor([[False, True], [False, False]])).tolist() == [1, 2]
    with pytest.raises(ValueError, match="right padding"):
        lengths_from_padding_mask(torch.tensor([[True, False]]))
    with pytest.raises(ValueError, match="bool"):
        lengths_from_padding_mask(torch.tensor([[0, 1]]))


# ---- the CTC loss ---------------------------------------------------------------------------------------------

def reference_ctc_nll(probs: torch.Tensor, target: list[int], blank: int = 0) -> float:
    """-log sum over every path pi in V^T whose collapse is the target of prod_t probs[t, pi_t] (brute force)."""
    T, V = probs.shape
    total = 0.0
    for path in itertools.product(range(V), repeat=T):
        merged = [k for k, _ in itertools.groupby(path)]
        if [k for k in merged if k != blank] == target:
            total += math.prod(probs[t, k].item() for t, k in enumerate(path))
    return -math.log(total) if total > 0 else math.inf


def test_ctc_loss_by_hand_two_frames():
    """T = 2, V = 3 uniform (each 1/3), target [1]: the paths (1, 1), (0, 1), (1, 0) -> p = 3/9, loss = log 3."""
    logits = torch.zeros(1, 2, 3)
    loss = ctc_loss(logits, None, torch.tensor([[1]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(math.log(3), rel=1e-6)
    # target [1, 1]: a blank must separate them, the only path is (1, 0, 1) with T = 3: p = 1/27
    loss = ctc_loss(torch.zeros(1, 3, 3), None, torch.tensor([[1, 1]]), torch.tensor([2]))
    assert loss.item() == pytest.approx(3 * math.log(3), rel=1e-6)


def test_ctc_loss_matches_brute_force_over_padded_frames():
    torch.manual_seed(0)
    V, T = 3, 6
    logits = torch.randn(3, T, V, dtype=torch.float64)
    padding_mask = torch.tensor([[False] * 6, [False] * 4 + [True] * 2, [False] * 5 + [True]])
    targets = torch.tensor([[1, 2, 1], [2, 2, 0], [1, 0, 0]])  # padded beyond the lengths with 0
    target_lengths = torch.tensor([3, 2, 1])
    per_row = []
    for b, n in enumerate([6, 4, 5]):
        probs = torch.softmax(logits[b, :n], dim=-1)  # only the real frames
        per_row.append(reference_ctc_nll(probs, targets[b, : target_lengths[b]].tolist()))
    sum_loss = ctc_loss(logits, padding_mask, targets, target_lengths, reduction="sum")
    assert sum_loss.item() == pytest.approx(sum(per_row), rel=1e-6)
    sentence = ctc_loss(logits, padding_mask, targets, target_lengths, reduction="sentence")
    assert sentence.item() == pytest.approx(sum(per_row) / 3, rel=1e-6)
    mean = ctc_loss(logits, padding_mask, targets, target_lengths, reduction="mean")
    assert mean.item() == pytest.approx(sum(r / n for r, n in zip(per_row, [3, 2, 1], strict=True)) / 3, rel=1e-6)
    # what sits in the padded frames does not matter
    changed = logits.clone()
    changed[1, 4:] = 50.0
    assert ctc_loss(changed, padding_mask, targets, target_lengths).item() == pytest.approx(sum_loss.item(), rel=1e-9)


def test_impossible_alignment_is_zeroed_or_infinite():
    logits = torch.zeros(1, 2, 3)  # 2 frames cannot hold [1, 1] (needs a blank between: 3 frames)
    targets, lengths = torch.tensor([[1, 1]]), torch.tensor([2])
    assert ctc_loss(logits, None, targets, lengths, zero_infinity=True).item() == 0.0
    assert math.isinf(ctc_loss(logits, None, targets, lengths, zero_infinity=False).item())
    assert math.isinf(reference_ctc_nll(torch.full((2, 3), 1 / 3), [1, 1]))
    with pytest.raises(ValueError, match="reduction"):
        ctc_loss(logits, None, targets, lengths, reduction="avg")


def test_ctc_loss_trains_a_frame_classifier_to_the_transcript():
    """Gradient descent on free frame logits with the collate's targets: the greedy decode reaches the text."""
    vocab = CharVocab.librispeech()
    batch = AudioCollate(vocab=vocab)([(torch.zeros(1), "go"), (torch.zeros(1), "no no")])
    padding_mask = torch.zeros(2, 14, dtype=torch.bool)
    padding_mask[0, 8:] = True
    logits = torch.zeros(2, 14, len(vocab), requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(200):
        loss = ctc_loss(logits, padding_mask, batch["targets"], batch["target_lengths"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    texts = [vocab.decode(ids) for ids in greedy_decode(logits.detach(), padding_mask)]
    assert texts == ["GO", "NO NO"]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_ctc_loss_matches_transformers_data2vec_audio_for_ctc(tmp_path, reduction):
    """HF's Data2VecAudioForCTC computes its loss from the logits, the frame lengths of its conv feature encoder and
    labels padded with -100; ours, on the same logits, with the frame padding mask built here from the conv formula
    floor((L - k) / s) + 1 per layer and targets padded with the blank, gives the same number."""
    from transformers import Data2VecAudioConfig, Data2VecAudioForCTC

    torch.manual_seed(0)
    config = Data2VecAudioConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                                 conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=4,
                                 num_conv_pos_embedding_groups=2, conv_pos_kernel_size=3, vocab_size=32,
                                 ctc_loss_reduction=reduction)
    Data2VecAudioForCTC(config).save_pretrained(tmp_path)
    model = Data2VecAudioForCTC.from_pretrained(tmp_path).eval()
    samples = [400, 271]
    waveforms = torch.randn(2, 400)
    attention_mask = (torch.arange(400) < torch.tensor(samples).unsqueeze(1)).long()  # HF: 1 = real sample
    labels = [[5, 6, 7], [8, 8, 9, 10]]
    hf_labels = torch.tensor([labels[0] + [-100], labels[1]])
    with torch.no_grad():
        out = model(waveforms, attention_mask=attention_mask, labels=hf_labels)
    frames = []
    for n in samples:
        for k, s in zip(config.conv_kernel, config.conv_stride, strict=True):
            n = (n - k) // s + 1
        frames.append(n)
    padding_mask = torch.arange(out.logits.shape[1]) >= torch.tensor(frames).unsqueeze(1)  # (B, T) True = padding
    targets = torch.tensor([labels[0] + [0], labels[1]])
    ours = ctc_loss(out.logits, padding_mask, targets, torch.tensor([3, 4]), reduction=reduction, zero_infinity=False)
    assert ours.item() == pytest.approx(out.loss.item(), rel=1e-5)


# ---- error rates ----------------------------------------------------------------------------------------------

def reference_levenshtein(a, b) -> int:
    """Top-down recursion: the last elements are equal (free), or substituted, deleted or inserted (cost 1)."""
    @functools.cache
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j - 1) + (a[i - 1] != b[j - 1]), d(i - 1, j) + 1, d(i, j - 1) + 1)

    return d(len(a), len(b))


def test_edit_distance_against_the_recursion():
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 9))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 9))]
        assert edit_distance(a, b) == reference_levenshtein(tuple(a), tuple(b))


def test_wer_worked_example():
    # ref:  the cat sat on the mat   (6 words)
    # hyp:  the cat sit on     mat   sat -> sit (1 substitution), the second "the" deleted (1 deletion)
    refs, hyps = ["the cat sat on the mat"], ["the cat sit on mat"]
    assert word_errors(refs, hyps) == (2, 6)
    assert word_error_rate(refs, hyps) == pytest.approx(2 / 6)
    # ref: a b (2 words); hyp: a x b y: two insertions -> WER 2 / 2 = 1
    assert word_error_rate(["a b"], ["a x b y"]) == pytest.approx(1.0)
    # corpus level: (2 + 2) / (6 + 2), not the mean of 1/3 and 1
    assert word_error_rate(refs + ["a b"], hyps + ["a x b y"]) == pytest.approx(4 / 8)
    assert word_error_rate(["one two"], [""]) == pytest.approx(1.0)  # everything deleted


def test_cer_worked_example():
    # kitten -> sitting: k->s, e->i (2 substitutions), + g (1 insertion) = 3 edits over 6 characters
    assert char_errors(["kitten"], ["sitting"]) == (3, 6)
    assert char_error_rate(["kitten"], ["sitting"]) == pytest.approx(0.5)
    # the space counts: "ab cd" (5 characters) -> "abcd": one deletion
    assert char_error_rate(["ab cd"], ["abcd"]) == pytest.approx(1 / 5)
    assert char_error_rate(["ab  cd "], ["ab cd"]) == 0.0  # whitespace runs merged first


def test_error_rates_refuse_bad_input():
    with pytest.raises(ValueError, match="one hypothesis per reference"):
        word_error_rate(["a"], ["a", "b"])
    with pytest.raises(TypeError, match="lists of utterances"):
        word_error_rate("a b", "a b")
    with pytest.raises(ValueError, match="undefined"):
        char_error_rate([""], ["x"])


def test_ctc_objective_and_scores_for_the_finetuning_loop():
    """CTCObjective = the summed per-utterance NLL over the real frames / B (fairseq sentence_avg), against the
    brute-force alignment sum; CTCScores decodes each utterance's frames and gives CER and WER in percent."""
    from tasks.audio import CTCObjective, CTCScores

    torch.manual_seed(0)
    vocab = CharVocab(["<pad>", "|", "A", "B"])
    logits = torch.randn(2, 4, 4)
    padding = torch.tensor([[False] * 4, [False, False, False, True]])
    batch = AudioCollate(vocab=vocab)([(torch.zeros(1), "ab"), (torch.zeros(1), "b")])
    loss = CTCObjective()((logits, padding), batch)
    probs = logits.softmax(-1)
    expected = (reference_ctc_nll(probs[0], [2, 3]) + reference_ctc_nll(probs[1, :3], [3])) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    one_hot = torch.full((5, 4), -10.0)
    for t, k in enumerate([2, 2, 0, 1, 3]):  # A A - | B -> "A B"
        one_hot[t, k] = 10.0
    scores = CTCScores(vocab)([one_hot.numpy(), one_hot[:2].numpy()], ["a b", "b"])
    # "A B" exact; "A" for "B": 1 edit over 1 character, 1 word wrong of 1
    assert scores == {"cer": pytest.approx(100 * 1 / 4), "wer": pytest.approx(100 * 1 / 3)}
