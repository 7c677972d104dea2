"""Fine-tuning heads against their equations written out here (docs/design.md section 4, fine-tuning)."""

import pytest
import torch
from reference import layer_norm_of, randomise_

from data2vec import build_backbone, get_preset
from data2vec.heads import ImageClassificationHead, QuestionAnsweringHead, SequenceClassificationHead, TaskModel


@pytest.mark.parametrize("num_labels", [1, 3])
def test_roberta_head_equation(num_labels):
    head = SequenceClassificationHead(16, num_labels, style="roberta", dropout=0.1).eval()
    randomise_(head)
    x = torch.randn(4, 7, 16)
    W1, b1, W2, b2 = head.dense.weight, head.dense.bias, head.out.weight, head.out.bias
    # logits = W2 tanh(W1 x_0 + b1) + b2 (dropout is the identity in eval mode)
    expected = torch.tanh(x[:, 0] @ W1.T + b1) @ W2.T + b2
    torch.testing.assert_close(head(x), expected)
    assert head(x).shape == (4, num_labels)


def test_bert_head_equation_and_dropout_places():
    head = SequenceClassificationHead(16, 2, style="bert", dropout=0.5)
    randomise_(head)
    x = torch.randn(4, 7, 16)
    Wp, bp, Wc, bc = head.dense.weight, head.dense.bias, head.out.weight, head.out.bias
    pooled = torch.tanh(x[:, 0] @ Wp.T + bp)  # BERT pooler on [CLS]
    torch.testing.assert_close(head.eval()(x), pooled @ Wc.T + bc)
    # in training the BERT style drops only after the pooler: reproduce the one dropout mask
    head.train()
    torch.manual_seed(3)
    out = head(x)
    torch.manual_seed(3)
    keep = torch.empty_like(pooled).bernoulli_(0.5) / 0.5
    torch.testing.assert_close(out, (pooled * keep) @ Wc.T + bc)


def test_roberta_head_drops_before_both_linears():
    head = SequenceClassificationHead(16, 2, style="roberta", dropout=0.5).train()
    randomise_(head)
    x = torch.randn(4, 7, 16)
    torch.manual_seed(5)
    out = head(x)
    torch.manual_seed(5)
    keep1 = torch.empty(4, 16).bernoulli_(0.5) / 0.5
    h = torch.tanh((x[:, 0] * keep1) @ head.dense.weight.T + head.dense.bias)
    keep2 = torch.empty(4, 16).bernoulli_(0.5) / 0.5
    torch.testing.assert_close(out, (h * keep2) @ head.out.weight.T + head.out.bias)


def test_sequence_head_uses_only_the_first_token():
    head = SequenceClassificationHead(16, 2).eval()
    x = torch.randn(2, 5, 16)
    y = x.clone()
    y[:, 1:] = torch.randn(2, 4, 16)
    torch.testing.assert_close(head(x), head(y))


def test_qa_head_equation():
    head = QuestionAnsweringHead(16)
    randomise_(head)
    x = torch.randn(3, 9, 16)
    start, end = head(x)
    W, b = head.qa.weight, head.qa.bias
    torch.testing.assert_close(start, x @ W[0] + b[0])  # s_t = w_s . x_t + b_s
    torch.testing.assert_close(end, x @ W[1] + b[1])  # e_t = w_e . x_t + b_e
    assert start.shape == end.shape == (3, 9)


def test_image_head_mean_pooling_equation():
    head = ImageClassificationHead(16, 5, pooling="mean", eps=1e-6)
    randomise_(head)
    x = torch.randn(2, 1 + 4, 16)
    pooled = x[:, 1:].sum(1) / 4  # mean over the 4 patch tokens, CLS dropped
    assert head.norm.eps == 1e-6
    normed = layer_norm_of(head.norm, pooled)
    torch.testing.assert_close(head(x), normed @ head.classifier.weight.T + head.classifier.bias)


def test_image_head_cls_pooling_equation():
    head = ImageClassificationHead(16, 5, pooling="cls")
    assert head.norm is None  # ViT: the backbone's final norm is already applied
    randomise_(head)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(head(x), x[:, 0] @ head.classifier.weight.T + head.classifier.bias)
    assert ImageClassificationHead(16, 5, pooling="cls", norm=True).norm is not None


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="style"):
        SequenceClassificationHead(16, 2, style="gpt")
    with pytest.raises(ValueError, match="num_labels"):
        SequenceClassificationHead(16, 0)
    with pytest.raises(ValueError, match="pooling"):
        ImageClassificationHead(16, 2, pooling="max")
    with pytest.raises(ValueError, match=r"\(B, T, 16\)"):
        QuestionAnsweringHead(16)(torch.randn(2, 3, 8))


def test_task_model_text_and_vision():
    torch.manual_seed(0)
    text = build_backbone(get_preset("text", "tiny", dropout=0.0, attn_dropout=0.0)).eval()
    model = TaskModel(text, SequenceClassificationHead(64, 2)).eval()
    ids = torch.randint(3, 1000, (2, 6))
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 4:] = True
    logits = model(input_ids=ids, padding_mask=pad, labels=torch.tensor([0, 1]))
    torch.testing.assert_close(logits, model.head(text(ids, padding_mask=pad)))
    assert model.backbone is text

    vision = build_backbone(get_preset("vision", "tiny")).eval()
    vmodel = TaskModel(vision, ImageClassificationHead(64, 3)).eval()
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(vmodel(images=images), vmodel.head(vision(images)))
    with pytest.raises(ValueError, match="input_ids"):
        vmodel(labels=torch.zeros(2))


# ---- speech heads in a TaskModel -------------------------------------------------------------------------------

def speech_model(head_cls, *args):
    from data2vec.heads import AudioClassificationHead, CTCHead  # noqa: F401

    torch.manual_seed(0)
    backbone = build_backbone(get_preset("audio", "tiny", dropout=0.0, attn_dropout=0.0)).eval()
    return TaskModel(backbone, randomise_(head_cls(backbone.cfg.dim, *args))).eval()


def test_audio_classification_head_averages_the_projected_real_frames():
    """logits = W_c (mean over real frames of W_p x_t + b_p) + b_c, written out per row; padding changes nothing."""
    from data2vec.heads import AudioClassificationHead

    model = speech_model(AudioClassificationHead, 5)
    waveform, lengths = torch.randn(2, 4000), torch.tensor([4000, 2400])
    waveform[1, 2400:] = 0
    with torch.no_grad():
        logits = model(waveform=waveform, lengths=lengths)
        head = model.head
        for row, n in enumerate(lengths.tolist()):
            frames = model.backbone(waveform[row:row + 1, :n])[0]  # (T_row, D): the utterance alone
            pooled = torch.stack([head.projector.weight @ x + head.projector.bias for x in frames]).mean(0)
            expected = head.classifier.weight @ pooled + head.classifier.bias
            torch.testing.assert_close(logits[row], expected, atol=1e-5, rtol=1e-4)


def test_ctc_head_in_a_task_model_returns_the_frame_padding():
    from data2vec.heads import CTCHead

    model = speech_model(CTCHead, 7)
    waveform, lengths = torch.randn(2, 4000), torch.tensor([4000, 1300])
    with torch.no_grad():
        logits, padding = model(waveform=waveform, lengths=lengths)
    assert logits.shape == (2, 12, 7) and padding.shape == (2, 12)
    # frames by the conv formula written here: floor((L - k) / s) + 1 per layer
    def frames(n):
        for k, s in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2), strict=True):
            n = (n - k) // s + 1
        return n
    assert (~padding).sum(1).tolist() == [frames(4000), frames(1300)]
