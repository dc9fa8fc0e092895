"""Post-training: the Llama 3 chat format, post-training data, and the SFT / DPO / RM maths.

The job kinds that use these live in `runtime/jobs/post_jobs.py`; the modules here are
plain functions so the tests can check them without an executor.
"""
