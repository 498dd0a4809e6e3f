"""Write models/data/digits_*.npy: 8x8 digits from scikit-learn's bundled data set, scaled to [0, 1].

Run with the export environment (see models/README.md): python models/make_example_data.py
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

out = Path(__file__).resolve().parent / "data"
out.mkdir(exist_ok=True)
images = (load_digits().images / 16.0).astype(np.float32)[:, None]  # (n, 1, 8, 8), as torch_cnn_digits expects
np.save(out / "digits_samples.npy", images[:8])
np.save(out / "digits_background.npy", images[100:164])
