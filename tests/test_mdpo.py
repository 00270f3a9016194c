"""mDPO's optional terms: the conditional (image-contrast) term and the anchor, their seeded crops,
config checks, the packed step's bookkeeping (TRL metrics on the real pairs only) and a short run."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from PIL import Image

from nbtools.config import ConfigError, RunConfig, split_loss_types
from nbtools.packing.contrast import (AUXILIARY_ROWS, CONTRAST_KEY, CROP_KEEP, auxiliary_example, auxiliary_rows,
                                      corrupt_image, crop_box, crop_seed, with_auxiliary)
from nbtools.packing.layout import LAYOUT_KEYS
from nbtools.packing.mdpo import anchor_losses, conditional_losses, mdpo_loss, mdpo_metrics

BETA = 0.1


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def _image(colour, size=(48, 32)):
    image = Image.new("RGB", size, colour)
    for x in range(0, size[0], 3):  # structure, so that crops at different places differ
        for y in range(0, size[1], 2):
            image.putpixel((x, y), ((x * 11) % 256, (y * 7) % 256, (x * y) % 256))
    return image


def _example(question="What colour is the shape?", chosen="Red.", rejected="Blue.", images=None, **extra):
    example = {
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected}]}],
        "images": [_image((200, 30, 30))] if images is None else images,
    }
    example.update(extra)
    return example


# --- the loss terms, against a hand computation ---------------------------------------------------

def test_conditional_and_anchor_terms_match_a_hand_computation():
    chosen, corrupted, ref_chosen, ref_corrupted = -10.0, -14.0, -11.0, -12.0
    # real images: +1 over the reference; corrupted images: -2 over it; margin 3, times beta 0.3
    expected_conditional = -_log_sigmoid(0.3)
    expected_anchor = -_log_sigmoid(0.1)  # chosen reward beta * (+1), delta 0
    got_conditional = conditional_losses(torch.tensor([chosen]), torch.tensor([corrupted]), torch.tensor([ref_chosen]),
                                         torch.tensor([ref_corrupted]), beta=BETA)
    got_anchor = anchor_losses(torch.tensor([chosen]), torch.tensor([ref_chosen]), beta=BETA)
    assert got_conditional.item() == pytest.approx(expected_conditional, abs=1e-6)
    assert got_anchor.item() == pytest.approx(expected_anchor, abs=1e-6)
    assert expected_conditional == pytest.approx(0.554355, abs=1e-6)  # log(1 + e^-0.3)
    # the corrupted images winning is penalised more than them losing
    swapped = conditional_losses(torch.tensor([corrupted]), torch.tensor([chosen]), torch.tensor([ref_corrupted]),
                                 torch.tensor([ref_chosen]), beta=BETA)
    assert swapped.item() == pytest.approx(-_log_sigmoid(-0.3), abs=1e-6) and swapped.item() > got_conditional.item()


def test_mdpo_loss_weights_each_term_over_its_own_rows():
    # rows 0, 1: real pairs; rows 2, 3: image-contrast pairs (chosen = real images, rejected = corrupted)
    chosen = torch.tensor([-5.0, -6.0, -5.0, -6.5])
    rejected = torch.tensor([-7.0, -6.0, -9.0, -6.0])
    ref_chosen = torch.tensor([-5.5, -5.0, -5.5, -6.0])
    ref_rejected = torch.tensor([-6.0, -6.0, -8.0, -7.0])
    auxiliary = torch.tensor([False, False, True, True])
    weights = {"mdpo_conditional": 2.0, "mdpo_anchor": 0.5}
    total, sums = mdpo_loss(chosen, rejected, ref_chosen, ref_rejected, auxiliary, beta=BETA, weights=weights)

    conditional = [-_log_sigmoid(BETA * ((-5.0 + 5.5) - (-9.0 + 8.0))),  # margin 1.5
                   -_log_sigmoid(BETA * ((-6.5 + 6.0) - (-6.0 + 7.0)))]  # margin -1.5
    anchor = [-_log_sigmoid(BETA * 0.5), -_log_sigmoid(BETA * -1.0)]
    expected = 2.0 * sum(conditional) / 2 + 0.5 * sum(anchor) / 2
    assert total.item() == pytest.approx(expected, abs=1e-6)
    metrics = mdpo_metrics(sums.tolist(), weights)
    assert metrics == pytest.approx({"mdpo/conditional": sum(conditional) / 2, "mdpo/conditional_accuracy": 0.5,
                                     "mdpo/anchor": sum(anchor) / 2}, abs=1e-6)
    # negative check: the anchor alone ignores the contrast rows, the conditional term the real pairs
    anchor_only, _ = mdpo_loss(chosen, rejected, ref_chosen, ref_rejected, auxiliary, beta=BETA,
                               weights={"mdpo_anchor": 1.0})
    assert anchor_only.item() == pytest.approx(sum(anchor) / 2, abs=1e-6)
    assert mdpo_metrics(sums.tolist(), {"mdpo_anchor": 1.0}).keys() == {"mdpo/anchor"}


def test_a_batch_without_contrast_rows_adds_nothing_and_logs_no_conditional_metric():
    values = torch.tensor([-3.0, -4.0])
    total, sums = mdpo_loss(values, values - 1, values, values, torch.tensor([False, False]), beta=BETA,
                            weights={"mdpo_conditional": 1.0})
    assert total.item() == 0.0 and not torch.isnan(total)
    assert mdpo_metrics(sums.tolist(), {"mdpo_conditional": 1.0}) == {}
    with pytest.raises(ValueError, match="mdpo_loss knows"):
        mdpo_loss(values, values, values, values, torch.tensor([False, True]), beta=BETA, weights={"mdpo_ancor": 1.0})


# --- the seeded crop -------------------------------------------------------------------------------

def test_the_crop_is_deterministic_per_pair_and_seed_and_differs_between_them():
    red = _example()
    other_pair = _example(question="Which shape is it?")
    first = corrupt_image(red["images"][0], crop_seed(42, red, 0))
    again = corrupt_image(copy.deepcopy(red)["images"][0], crop_seed(42, copy.deepcopy(red), 0))
    assert first.tobytes() == again.tobytes()  # same pair, same seed: the same pixels (reference values cacheable)
    assert first.size == red["images"][0].size  # resized back: as many image tokens as the real image
    box = crop_box(48, 32, crop_seed(42, red, 0))
    assert box != crop_box(48, 32, crop_seed(42, other_pair, 0))  # another pair: another crop
    assert box != crop_box(48, 32, crop_seed(7, red, 0))  # another run seed: another crop
    assert crop_seed(42, red, 0) != crop_seed(42, _example(images=[_image((20, 180, 40))]), 0)  # other pixels
    assert first.tobytes() != red["images"][0].tobytes()


def test_crops_keep_at_most_a_fifth_of_the_image():
    areas = []
    for index in range(300):
        left, top, right, bottom = crop_box(640, 480, crop_seed(index, _example(), 0))
        assert 0 <= left < right <= 640 and 0 <= top < bottom <= 480
        areas.append((right - left) * (bottom - top) / (640 * 480))
    assert min(areas) >= CROP_KEEP[0] * 0.95 and max(areas) <= CROP_KEEP[1] * 1.01
    assert max(areas) - min(areas) > 0.15  # spread over the range, not one fixed size


def test_auxiliary_example_contrasts_images_with_the_chosen_answer_on_both_sides():
    example = _example(images=[_image((200, 30, 30)), _image((20, 30, 200), size=(40, 40))])
    before = copy.deepcopy(example)
    aux = auxiliary_example(example, seed=3)
    assert aux["rejected"] == example["chosen"] and aux["prompt"] == example["prompt"]
    assert aux["images"] == example["images"]
    assert [im.size for im in aux["rejected_images"]] == [(48, 32), (40, 40)]
    assert all(a.tobytes() != b.tobytes() for a, b in zip(aux["rejected_images"], example["images"]))
    assert "seed 3" in aux[CONTRAST_KEY]
    assert example == before  # the real pair is left as it was
    # a row with rejected_images: those are the corrupted images, not a crop
    contrast = _example(rejected_images=[_image((0, 0, 0))])
    aux = auxiliary_example(contrast, seed=3)
    assert aux["rejected_images"] is contrast["rejected_images"] and aux[CONTRAST_KEY] == "rejected_images"
    assert aux["rejected"] == contrast["chosen"]
    assert auxiliary_example(_example(images=[]), seed=3) is None  # nothing to corrupt: no contrast pair
    # videos stay the same on both sides; a video-only pair gets no contrast pair
    clip = object()
    with_video = auxiliary_example(_example(videos=[clip]), seed=3)
    assert with_video["videos"] == [clip] and len(with_video["rejected_images"]) == 1
    assert auxiliary_example(_example(images=[], videos=[clip]), seed=3) is None


def test_with_auxiliary_appends_one_contrast_pair_per_pair_with_images_and_flags_them():
    examples = [_example(), _example(images=[]), _example(question="Another?")]
    expanded = with_auxiliary(examples, seed=0)
    assert len(expanded) == 5 and expanded[:3] == examples
    assert auxiliary_rows(expanded).tolist() == [False, False, False, True, True]
    assert AUXILIARY_ROWS in LAYOUT_KEYS  # never handed to the model as an input


# --- config ------------------------------------------------------------------------------------------

def test_loss_types_split_into_trl_ones_with_aligned_weights_and_mdpo_terms():
    assert split_loss_types(["sigmoid", "mdpo_conditional", "sft", "mdpo_anchor"], [1.0, 2.0, 0.5, 3.0]) == (
        ["sigmoid", "sft"], [1.0, 0.5], {"mdpo_conditional": 2.0, "mdpo_anchor": 3.0})
    assert split_loss_types(["sigmoid", "mdpo_anchor"]) == (["sigmoid"], None, {"mdpo_anchor": 1.0})
    assert split_loss_types(["sigmoid", "sft"], [1.0, 0.2]) == (["sigmoid", "sft"], [1.0, 0.2], {})


def test_trl_dpo_config_receives_only_its_own_loss_types(tmp_path):
    from nbtools.train.runner import build_dpo_config

    cfg = RunConfig(loss_type=["sigmoid", "mdpo_conditional", "sft", "mdpo_anchor"], loss_weights=[1.0, 2.0, 0.5, 3.0])
    args = build_dpo_config(cfg, tmp_path, "fp32", has_validation=False, on_cpu=True)
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5]
    plain = build_dpo_config(RunConfig(loss_type=["sigmoid", "sft"]), tmp_path, "fp32", False, True)
    assert plain.loss_type == ["sigmoid", "sft"] and plain.loss_weights is None


@pytest.mark.parametrize("settings, message", [
    ({"loss_type": ["sigmoid", "mdpo_conditional"], "packing": False},
     "loss_type: only the packed step implements mdpo_conditional, and packing is off "
     "(fix: set packing: true, or remove mdpo_conditional from loss_type)"),
    ({"loss_type": ["sigmoid", "mdpo_conditional", "mdpo_anchor"], "packing": False},
     "loss_type: only the packed step implements mdpo_conditional, mdpo_anchor, and packing is off "
     "(fix: set packing: true, or remove mdpo_conditional and mdpo_anchor from loss_type)"),
    ({"loss_type": ["mdpo_anchor"]},
     "loss_type: mdpo_anchor must be added to a DPO loss, and none is given "
     "(fix: add sigmoid, e.g. loss_type: [sigmoid, mdpo_anchor], or choose a loss_preset)"),
    ({"loss_type": ["sigmoid", "mdpo_anchor", "mdpo_anchor"]},
     "loss_type: mdpo_anchor is listed 2 times (fix: list mdpo_anchor once and set its weight in loss_weights)"),
])
def test_impossible_mdpo_settings_get_one_clear_message(settings, message):
    with pytest.raises(ConfigError) as caught:
        RunConfig(**settings)
    assert str(caught.value) == message


def test_an_unknown_loss_type_names_the_mdpo_terms_too():
    with pytest.raises(ConfigError) as caught:
        RunConfig(loss_type=["sigmoid", "mdpo_ancor"])
    assert str(caught.value).startswith("loss_type: 'mdpo_ancor' is not one of sigmoid, hinge")
    assert "(fix: did you mean 'mdpo_anchor'? use one of:" in str(caught.value)
    assert str(caught.value).endswith("sigmoid_norm, mdpo_conditional, mdpo_anchor)")
    # and the valid combination is accepted, with the default plain sigmoid untouched
    assert RunConfig(loss_type=["sigmoid", "mdpo_conditional", "mdpo_anchor"]).loss_type[1:] == [
        "mdpo_conditional", "mdpo_anchor"]
    assert RunConfig().loss_type == ["sigmoid"]
    # every TRL loss takes the mDPO terms (the packed step implements them all)
    assert RunConfig(loss_type=["robust", "mdpo_anchor"]).loss_type == ["robust", "mdpo_anchor"]
