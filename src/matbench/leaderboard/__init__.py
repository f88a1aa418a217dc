"""``matbench leaderboard``: every model on every material benchmark, one page.

- :mod:`~matbench.leaderboard.registry`: the packaged benchmarks (datamodule, roots, protocols),
- :mod:`~matbench.leaderboard.models`: model names (open_clip ``arch/pretrained``, timm, Hugging
  Face, local files, matbench checkpoints) resolved to what they can do,
- :mod:`~matbench.leaderboard.probe`: the linear probe (CLIP_benchmark's protocol),
- :mod:`~matbench.leaderboard.runner`: the model × benchmark sweep (resumable, shardable),
- :mod:`~matbench.leaderboard.page`: the static HTML page, Markdown and CSV.

Nothing heavy is imported here: ``matbench --help`` stays fast.
"""
