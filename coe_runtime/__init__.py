"""CoE runtime: everything that runs inside a pod (or a local subprocess) for one step.

Layering (imports point downwards only; import-linter checks it, see pyproject.toml):
  0 ground : errors, labels, data, store (file, s3 back-ends), answers, progress, step
  1 data   : models, readers, clue_file, seeds, prompts, tasks, metrics
  2        : generate
  3        : evaluate
  4        : train, prepare
  5 top    : steer, clues, __main__
"""

__version__ = "0.1.0"
