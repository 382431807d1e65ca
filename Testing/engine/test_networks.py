"""The inference fast paths compute what the plain PyTorch layers compute: the direct oneDNN
convolution, bfloat16 upsampling through float32, in-place activations, and bfloat16 inference
of the bundled model on the bundled real scan, the fusion head computed in slabs; widening a
trained model's fusion layer keeps its outputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mecca import cpu_kernels, networks
from mecca.checkpoint import load_model
from mecca.datasets import binary_label
from mecca.environment import build_state, normalize_image
from mecca.hints import hint_map
from mecca.io import read_volume
from mecca.resources import DEFAULT_MODEL, SAMPLE_IMAGE, SAMPLE_LABEL, resource_path
from mecca.users import SimulatedUser


@pytest.mark.parametrize("stride, dilation", [(1, 1), (1, 4), (2, 1)])
def test_the_direct_onednn_convolution_equals_nn_conv3d(stride, dilation):
    torch.manual_seed(0)
    conv = cpu_kernels.Conv3d(5, 7, 3, stride=stride, padding=dilation, dilation=dilation).eval()
    x = torch.randn(1, 5, 13, 10, 11)
    with torch.no_grad():
        fast = conv(x)
        plain = torch.nn.Conv3d.forward(conv, x)
    assert fast.shape == plain.shape
    assert torch.allclose(fast, plain, atol=1e-5)


def test_a_trace_records_the_regular_convolution():
    """An ONNX export (a trace) must record convolutions other runtimes know, not the direct oneDNN
    call that plain inference takes (research/experiments/onnxruntime_lever.py)."""
    conv = cpu_kernels.Conv3d(2, 3, 3, padding=1).eval()
    with torch.no_grad():
        graph = str(torch.jit.trace(conv, torch.randn(1, 2, 8, 8, 8)).inlined_graph)
    assert "mkldnn_convolution" not in graph and "aten::_convolution" in graph


@pytest.mark.parametrize("channels", [2, 8])
def test_bfloat16_upsampling_is_the_float32_result_rounded(channels):
    x = torch.randn(1, channels, 6, 7, 5).to(torch.bfloat16).contiguous(memory_format=torch.channels_last_3d)
    out = cpu_kernels.upsample(x, (12, 13, 10))
    reference = F.interpolate(x.float(), size=(12, 13, 10), mode="trilinear", align_corners=False)
    assert out.dtype == torch.bfloat16 and out.shape == (1, channels, 12, 13, 10)
    assert torch.equal(out, reference.to(torch.bfloat16))


def test_in_place_activations_keep_the_block_and_its_gradients():
    torch.manual_seed(0)
    block = networks.DilatedBlock(4, 2)
    torch.nn.init.normal_(block.conv2.weight, std=0.1)
    x = torch.randn(2, 4, 9, 9, 9, requires_grad=True)
    out = block(x)
    out.square().sum().backward()
    fast_grads = [x.grad.clone()] + [p.grad.clone() for p in block.parameters()]
    x.grad = None
    block.zero_grad()
    reference = F.relu(x + torch.nn.Conv3d.forward(block.conv2, F.relu(torch.nn.Conv3d.forward(block.conv1, x))))
    reference.square().sum().backward()
    assert torch.allclose(out, reference, atol=1e-6)
    for fast, slow in zip(fast_grads, [x.grad] + [p.grad for p in block.parameters()]):
        assert torch.allclose(fast, slow, atol=1e-5)


def test_bfloat16_inference_takes_the_float32_actions_on_a_real_scan():
    image = read_volume(resource_path(*SAMPLE_IMAGE))
    label = binary_label(read_volume(resource_path(*SAMPLE_LABEL)).array)
    clicks = SimulatedUser(label, seed=0).clicks(np.zeros_like(label, bool), 3, 0)
    state = build_state(torch.from_numpy(normalize_image(image.array))[None],
                        torch.full((1, *image.shape), 5, dtype=torch.uint8),
                        torch.from_numpy(hint_map(image.shape, clicks))[None])
    actions = {}
    for precision in ("float32", "bfloat16"):
        model = load_model(resource_path(*DEFAULT_MODEL), precision=precision)
        with torch.no_grad():
            logits, _ = model.policy(state.to(model.dtype).contiguous(memory_format=torch.channels_last_3d),
                                     with_value=False)
        actions[precision] = logits.argmax(dim=1)
    agreement = (actions["float32"] == actions["bfloat16"]).float().mean().item()
    assert agreement > 0.999, agreement


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("rows", [3, 8])
def test_the_fusion_head_in_slabs_gives_exactly_the_whole_volume_result(monkeypatch, precision, rows):
    """Slabs of an odd and an even number of rows, on the real scan through the bundled model; an odd
    depth (no exact factor 2 along the slab axis) takes the whole-volume path."""
    image = read_volume(resource_path(*SAMPLE_IMAGE))
    model = load_model(resource_path(*DEFAULT_MODEL), precision=precision)
    for depth in (image.shape[0] - image.shape[0] % 2, image.shape[0] - 1 + image.shape[0] % 2):
        array = torch.from_numpy(normalize_image(image.array[:depth]))[None]
        state = build_state(array, torch.full_like(array, 5, dtype=torch.uint8), torch.zeros_like(array))
        state = state.to(model.dtype).contiguous(memory_format=torch.channels_last_3d)
        logits = {}
        for name, voxels in (("whole", 1 << 40), ("slabs", rows * image.shape[1] * image.shape[2])):
            monkeypatch.setattr(cpu_kernels, "SLAB_VOXELS", voxels)
            with torch.no_grad():
                logits[name], _ = model.policy(state, with_value=False)
        if depth % 2 == 0:  # the slab path writes channels-last; the whole-volume path keeps its kernel's layout
            assert logits["slabs"].is_contiguous(memory_format=torch.channels_last_3d)
        assert torch.equal(logits["slabs"], logits["whole"]), depth


def test_widening_the_fusion_layer_keeps_every_output_and_trains_the_new_channels():
    config = networks.NetworkConfig(width=8, confidence_width=8, head_dilations=(2,), fusion_width=None)
    narrow = networks.MeccaModel.create(config, seed=3)
    for param in narrow.parameters():  # trained-looking weights, not the zero-initialised output layers
        param.data.normal_(0, 0.1)
    wide = narrow.with_fusion_width(16)
    assert wide.config.fusion_out_channels == 16 and wide.config.min_working_voxels == config.min_working_voxels
    state = torch.randn(1, 3, 14, 17, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (logits, value), (wide_logits, wide_value) = narrow.policy(state), wide.policy(state)
        assert torch.allclose(logits, wide_logits, atol=1e-5) and torch.equal(value, wide_value)
        action = torch.rand(1, 14, 17, 12) * 0.8 - 0.4
        assert torch.equal(narrow.confidence(state, action), wide.confidence(state, action))
    head = wide.policy.policy_out
    wide.policy(state)[0].square().sum().backward()
    assert head.out.weight.grad[:, 8:].abs().sum() > 0  # the new channels are live, not padding
    with pytest.raises(ValueError, match="widened"):
        wide.with_fusion_width(8)


def test_flip_averaged_scores_bring_each_flipped_pass_back_into_place():
    """With flip_average the scores are the mean log-probabilities of four passes (the state and its
    flip along each axis), each flipped back: a voxel's score comes from that voxel in every pass."""
    model = networks.MeccaModel.create(networks.NetworkConfig(width=8, confidence_width=8, head_dilations=(2,)), seed=0)
    with torch.no_grad():
        for parameter in model.policy.parameters():
            parameter.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(parameter.numel()))
    model.eval()
    state = torch.randn((1, 3, 12, 10, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model.action_scores(state)
        averaged = model.action_scores(state, flip_average=True)
        passes = [F.log_softmax(model.policy(state)[0], dim=1)]
        passes += [F.log_softmax(model.policy(state.flip(axis))[0], dim=1).flip(axis) for axis in (2, 3, 4)]
        assert torch.equal(plain, model.policy(state, with_value=False)[0])
    # (action_scores runs the flipped passes channels-last: the convolutions round differently)
    torch.testing.assert_close(averaged, torch.stack(passes).mean(0), atol=1e-3, rtol=1e-3)
    assert not torch.allclose(averaged, F.log_softmax(plain, dim=1))  # the flipped passes differ from the plain one


SPLIT = networks.NetworkConfig(architecture="split", width=8, confidence_width=8, encoder_width=8,
                               head_dilations=(2,), confidence_dilations=(2,), encoder_dilations=(1, 2))


def _trained_looking(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2, generator=generator)
    return model.eval()


def test_the_quantile_channel_depends_only_on_the_order_of_intensities():
    """Any increasing change of contrast (a CT window, an MRI gamma, a scanner's scale) leaves the
    channel as it is; it has zero mean and unit variance whatever the intensities' spread."""
    image = torch.randn(2, 1, 20, 24, 16, generator=torch.Generator().manual_seed(0))
    channel = networks.quantile_channel(image)
    changed = networks.quantile_channel(torch.exp(image) * 1000 - 7)
    assert (channel - changed).abs().mean() < 0.01 and (channel - changed).abs().max() < 0.1
    assert abs(channel.mean()) < 0.01 and abs(channel.std() - 1) < 0.01
    assert torch.equal(networks.quantile_channel(torch.full((1, 1, 4, 4, 4), 7.0)), torch.zeros(1, 1, 4, 4, 4))


def test_the_split_architecture_reuses_the_image_features_and_survives_a_file_round_trip(tmp_path):
    """The light heads given the features of the state's image compute what they compute from the
    state alone; C(s, -a) of the pair is C with the action negated; a saved file rebuilds the
    encoder and gives the same outputs."""
    from mecca.checkpoint import load_model, save_model

    model = _trained_looking(networks.MeccaModel.create(SPLIT, seed=1))
    assert set(model.networks) == {"encoder", "policy", "confidence"}
    state = torch.randn(1, 3, 14, 17, 12, generator=torch.Generator().manual_seed(2))
    action = torch.rand(1, 14, 17, 12, generator=torch.Generator().manual_seed(3)) * 0.8 - 0.4
    with torch.no_grad():
        features = model.image_features(state[:, 0])
        logits, value = model.policy_outputs(state, features)
        assert logits.shape == (1, 6, 14, 17, 12) and value.shape == (1, 1, 14, 17, 12)
        assert torch.equal(logits, model.policy_outputs(state)[0])
        pair = model.confidence_pair(state, action, features)
        assert torch.allclose(pair[0], model.confidence_logits(state, action), atol=1e-5)
        assert torch.allclose(pair[1], model.confidence_logits(state, -action), atol=1e-5)
        save_model(model, tmp_path / "split.safetensors")
        loaded = load_model(tmp_path / "split.safetensors")
        assert loaded.config.architecture == "split"
        assert torch.allclose(loaded.policy_outputs(state)[0], logits, atol=1e-6)


def test_a_session_runs_the_split_encoder_once_per_roi_and_flip_averaging_once_per_flip():
    """Three rounds on one ROI encode the image once (four times with flip averaging: once per
    flip), not once per policy step; a new ROI encodes again."""
    from mecca.session import InteractiveSession
    from mecca.volume import Volume

    model = _trained_looking(networks.MeccaModel.create(SPLIT, seed=4))
    array = np.random.default_rng(0).normal(0, 1, (20, 24, 22)).astype(np.float32)
    for flip_average, encodings in ((False, 1), (True, 4)):
        calls = []
        hook = model.encoder.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        try:
            session = InteractiveSession(Volume(array), model, roi=((2, 2, 2), (20, 22, 18)), steps_per_round=2,
                                         flip_average=flip_average)
            for _ in range(3):
                session.add_click((10, 12, 9), positive=True)
                session.step()
            assert len(calls) == encodings
            session.set_roi((1, 1, 1), (21, 23, 19))
            session.add_click((10, 12, 9), positive=True)
            session.step()
            assert len(calls) == 2 * encodings
        finally:
            hook.remove()
