"""A copy of a model with the working-grid minimum switched off (ROIs as they are), for the
inference ablation in research/NOTEBOOK.md ("Small ROIs").

    python -m research.experiments.without_minimum Resources/Models/mecca.safetensors /tmp/mecca-native-grid.safetensors
"""

import sys
from dataclasses import replace

from mecca.checkpoint import load_model, save_model

model = load_model(sys.argv[1])
model.config = replace(model.config, min_working_voxels=None)
save_model(model, sys.argv[2])
