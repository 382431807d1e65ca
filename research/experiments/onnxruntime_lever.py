"""The ONNX Runtime lever of docs/performance.md: the bundled policy (value head skipped) exported to
ONNX and run by ONNX Runtime's CPU provider, against PyTorch in float32 and in the default bfloat16,
same input, 2 threads. ONNX Runtime is not a dependency of the project:

    pip install onnxruntime onnx onnxscript
    python -m research.experiments.onnxruntime_lever
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from mecca.bench import median_seconds
from mecca.checkpoint import load_model
from mecca.resources import DEFAULT_MODEL, resource_path

THREADS = 2
REPEATS = 5


class PolicyLogits(torch.nn.Module):
    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, state):
        return self.policy(state, with_value=False)[0]


def compare(size: int, options: onnxruntime.SessionOptions) -> None:
    state = torch.randn(1, 3, size, size, size, generator=torch.Generator().manual_seed(0))
    model = load_model(resource_path(*DEFAULT_MODEL)).prepare_for_inference("float32")
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        path = Path(folder) / "policy.onnx"
        torch.onnx.export(PolicyLogits(model.policy), (state,), str(path), dynamo=False, opset_version=17)
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: state.numpy()}
        channels_last = state.contiguous(memory_format=torch.channels_last_3d)
        reference = model.policy(channels_last, with_value=False)[0].numpy()
        difference = np.abs(session.run(None, feed)[0] - reference).max()
        ort_s = median_seconds(lambda: session.run(None, feed), REPEATS)
        float32_s = median_seconds(lambda: model.policy(channels_last, with_value=False), REPEATS)
        model.prepare_for_inference("bfloat16")
        bfloat16_state = channels_last.to(torch.bfloat16)
        bfloat16_s = median_seconds(lambda: model.policy(bfloat16_state, with_value=False), REPEATS)
    print(f"{size}^3 policy forward: ONNX Runtime float32 {ort_s:.3f} s, PyTorch float32 {float32_s:.3f} s, "
          f"PyTorch bfloat16 {bfloat16_s:.3f} s (largest logit difference ONNX Runtime - PyTorch: {difference:.1e})")


def main(sizes=(96, 128)) -> None:
    torch.set_num_threads(THREADS)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    for size in sizes:
        compare(size, options)


if __name__ == "__main__":
    main(tuple(int(v) for v in sys.argv[1:]) or (96, 128))
