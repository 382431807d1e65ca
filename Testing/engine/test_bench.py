"""`mecca bench` runs end to end and reports every figure it promises (a smoke run on tiny ROIs:
the figures themselves are for the benchmark, never asserted as timings)."""

import json
import math

import pytest
import torch
from mecca import cpu_kernels, networks
from mecca.bench import conv_calls, interleaved_best_seconds, useful_flops
from mecca.cli import main


def test_bench_reports_rounds_peak_and_the_big_volume(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        assert main(["bench", "--json", str(tmp_path / "bench.json"), "--roi", "16,24", "--repeats", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "bench.json").read_text())
    assert set(result["rois"]) == {"16", "24"}
    assert result["steps_per_round"] == "auto" and result["flip_average"] is False
    for roi in result["rois"].values():
        assert roi["policy_steps"] == 3  # automatic steps on grids enlarged to the model's 64^3 minimum
        assert roi["mecca_round_s"]["n"] == 3 and roi["mecca_round_s"]["median"] > 0
        assert set(roi["parts_s"]) >= {"hint", "policy", "transition", "confidence", "advice"}
        assert roi["conv3d_peak_gflops"] > 0 and roi["policy_gflops_achieved"] > 0
        assert math.isclose(roi["policy_fraction_of_peak"],
                            roi["policy_gflops_achieved"] / roi["conv3d_peak_gflops"], rel_tol=0.02)
        assert math.isclose(roi["policy_fraction_of_best_layer"],
                            roi["policy_gflops_achieved"] / roi["conv3d_best_layer_gflops"], rel_tol=0.02)
    big = result["big_volume"]
    assert big["volume"] == [512, 512, 300] and big["session_open_s"] > 0 and big["peak_rss_mb"] > 0
    out = capsys.readouterr().out
    assert "512x512x300: session opens" in out and " steps " in out


def test_policy_and_peak_layer_are_timed_in_alternation():
    """Timed one after the other, a slow spell of the shared machine slowed only one of them and
    moved the policy's share of the conv3d peak by 10 points between runs."""
    calls = []
    best = interleaved_best_seconds([lambda: calls.append("policy"), lambda: calls.append("peak")], repeats=3)
    assert calls == ["policy", "policy", "peak", "peak"] * 3  # each timed call after an untimed one
    assert len(best) == 2 and all(0 <= seconds < 1 for seconds in best)


def test_achieved_flops_leave_out_the_slabs_halo_rows(bundled_model_float32):
    """At inference the fusion head convolves each slab with one halo row either side; those rows are
    computed twice and must not count as achieved work. 64 rows of 96 x 96 split into slabs of 56
    and 8 rows: the slab boundary costs two extra rows of the fusion and output convolutions."""
    policy = bundled_model_float32.policy
    state = torch.zeros(1, 3, 64, 96, 96).contiguous(memory_format=torch.channels_last_3d)
    assert state.shape[2:].numel() > cpu_kernels.SLAB_VOXELS
    head = policy.policy_out
    executed = sum(flops for *_, flops in conv_calls(policy, state, False))
    per_row = 2 * 96 * 96 * (head.fuse.out_channels * head.fuse.in_channels * 27 + head.out.out_channels * head.out.in_channels)
    assert executed - useful_flops(policy, (state, False)) == 2 * per_row
    assert cpu_kernels.SLAB_VOXELS == 1 << 19  # restored


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here: the GPU bench is checked where one is")
def test_bench_runs_on_a_gpu(tmp_path):
    """Every tensor of the round and of the FLOP count on the model's device (an H200 run once built
    the FLOP-count state on the CPU)."""
    assert main(["bench", "--json", str(tmp_path / "bench.json"), "--roi", "24", "--repeats", "1", "--device", "cuda",
                 "--no-big-volume"]) == 0
    assert json.loads((tmp_path / "bench.json").read_text())["rois"]["24"]["policy_gflops_achieved"] > 0


def test_bench_times_a_split_models_light_head_per_step(tmp_path):
    from mecca.checkpoint import save_model

    model = networks.MeccaModel.create(networks.NetworkConfig(architecture="split", width=8, encoder_width=8,
                                                              confidence_width=8, head_dilations=(2,)))
    save_model(model, tmp_path / "split.safetensors")
    assert main(["bench", "--json", str(tmp_path / "bench.json"), "--roi", "16", "--repeats", "1", "--no-big-volume",
                 "--model", str(tmp_path / "split.safetensors")]) == 0
    roi = json.loads((tmp_path / "bench.json").read_text())["rois"]["16"]
    joint = sum(flops for *_, flops in conv_calls(networks.MeccaModel.create().policy,
                                                  torch.zeros(1, 3, 16, 16, 16), False))
    assert 0 < roi["policy_gflop"] * 1e9 < joint  # the head alone, without the encoder the ROI ran once
