"""The inference fast paths compute what the plain PyTorch layers compute: the direct oneDNN
convolution, bfloat16 upsampling through float32, in-place activations, and bfloat16 inference
of the bundled model on the bundled real scan."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from MECCASegmentLib import networks
from MECCASegmentLib.checkpoint import load_model
from MECCASegmentLib.environment import build_state, normalize_image
from MECCASegmentLib.hints import SimulatedUser, hint_map
from MECCASegmentLib.io import binary_label, read_volume
from MECCASegmentLib.resources import DEFAULT_MODEL, SAMPLE_IMAGE, SAMPLE_LABEL, resource_path


@pytest.mark.parametrize("stride, dilation", [(1, 1), (1, 4), (2, 1)])
def test_the_direct_onednn_convolution_equals_nn_conv3d(stride, dilation):
    torch.manual_seed(0)
    conv = networks.Conv3d(5, 7, 3, stride=stride, padding=dilation, dilation=dilation).eval()
    x = torch.randn(1, 5, 13, 10, 11)
    with torch.no_grad():
        fast = conv(x)
        plain = torch.nn.Conv3d.forward(conv, x)
    assert fast.shape == plain.shape
    assert torch.allclose(fast, plain, atol=1e-5)


def test_bfloat16_upsampling_is_the_float32_result_rounded():
    x = torch.randn(1, 8, 6, 7, 5).to(torch.bfloat16).contiguous(memory_format=torch.channels_last_3d)
    out = networks.upsample(x, (12, 13, 10))
    reference = F.interpolate(x.float(), size=(12, 13, 10), mode="trilinear", align_corners=False)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 8, 12, 13, 10)
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
