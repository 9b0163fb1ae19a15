"""CoE controller (import name ``coe_controller``; lives in the top-level folder ``controller/``).

spec (CoEExperiment) -> planner (steps) -> local executor | PyTorchJob renderer + reconcile loop.
May import ``coe_runtime``; ``coe_runtime`` never imports this package.
"""
