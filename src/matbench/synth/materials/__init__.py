"""``matbench synth materials``: the two-stream paper's synthetic training set.

Three-level prompts (:mod:`~matbench.synth.materials.prompts`), images from a ``diffusers``
pipeline and labels by Grounding DINO + SAM (:mod:`~matbench.synth.materials.models`), run
resumably into a :class:`~matbench.datasets.folder.MaterialFolder` dataset
(:mod:`~matbench.synth.materials.pipeline`) with a summary and a contact sheet
(:mod:`~matbench.synth.materials.report`).

Nothing heavy is imported here: ``diffusers`` (the ``matbench[generate]`` extra) and the
``transformers`` detection models load only when the command runs.
"""
