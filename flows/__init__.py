"""The Prefect flows (one per stage, each only composing tasks) and the `rnngen` CLI.

This folder, `flows/`, is installed as the package `rnngen_flows` (pyproject.toml maps
it), so code imports it as `from rnngen_flows.train import train`, never `from flows`:
pip then puts no generic top-level name such as `flows` into site-packages.
"""
