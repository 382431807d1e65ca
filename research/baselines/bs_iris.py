"""BS-IRIS (Ma et al., IEEE TMI 2021), a row of the paper's Table 1: voxel agents sharing one
policy, as IteR-MRL, with the two changes that paper makes, both options of the engine's trainer:

- a boundary-aware reward: each voxel's relative cross-entropy gain counted (1 + lambda w) times,
  w = exp(-d^2 / 2 sigma^2) of its distance d to the label's surface (``boundary_reward``,
  ``mecca.environment.boundary_weights``);
- supervoxel clicking: a click marks the supervoxel it falls in (``"hint_encoding": "supervoxel"``,
  ``mecca.hints.supervoxel_hint_map``).

Where the paper is silent, we chose (the paper's text we could reach gives the ideas, not their
forms): w's form and sigma = 2 voxels, lambda = 1, the supervoxels (SLIC cells of about 5^3 voxels
in a window of 6 voxels around the click, the advice regions' SLIC settings), and no confidence
network in the reward (IteR-MRL's). The episodes, network and budget are IteR-MRL's row
(research/models/BASELINES.md): the paper's edge user with 1-9 clicks per round, 8 epochs of both
tasks. Trained by ``research.compare.BASELINE_COMMANDS["bs-iris"]``.
"""

from mecca.checkpoint import load_model
from mecca.errors import CheckpointError
from mecca.harness import MeccaMethod, register_method


def bs_iris_method(path) -> MeccaMethod:
    """A session of the BS-IRIS model at ``path``; a model trained otherwise is refused (its row
    would say BS-IRIS and measure something else)."""
    model = load_model(path)
    config = model.metadata.get("training", {}).get("config", {})
    if model.config.hint_encoding != "supervoxel" or not config.get("boundary_reward"):
        raise CheckpointError(f"{path} is not a BS-IRIS model: it was trained with {model.config.hint_encoding} hints "
                              f"and boundary reward {config.get('boundary_reward', 0)}")
    return MeccaMethod(model, "bs-iris")


register_method("bs-iris", bs_iris_method)
