"""rnngen: generalization bounds of bias-free ReLU RNNs (Tu, He & Tao, ICLR 2020).

This package is the pure computation layer: tokenizing, embedding, second
moments, Lanczos, the RNN, the bound terms and the plots. It imports numpy,
scipy, torch, pyarrow and matplotlib only -- never Prefect or Ray, which live
in the `tasks` and `flows` packages that wrap it.
"""

__version__ = "0.1.0"
