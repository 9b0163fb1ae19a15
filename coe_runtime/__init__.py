"""CoE runtime: everything that runs inside a pod (or a local subprocess) for one step.

Layering (imports point downwards only):
  ground floor : errors, labels, data, store, models, answers
  above        : readers, clue_file, prompts, tasks, metrics, step
  above        : train, generate
  top          : steer, clues, evaluate, __main__
"""

__version__ = "0.1.0"
