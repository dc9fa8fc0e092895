"""Training: the pre-training loop (resumable), LR schedules, evaluations and gates.

Job kinds in `runtime.jobs.train_jobs` are thin wrappers over these modules.
"""
