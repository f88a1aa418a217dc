"""``matbench synth materials``: the two-stream paper's synthetic training set.

Three-level prompts (:mod:`~matbench.synth.materials.prompts`), images from a ``diffusers``
pipeline and labels by Grounding DINO + SAM (:mod:`~matbench.synth.materials.models`), run
resumably into a :class:`~matbench.datasets.folder.MaterialFolder` dataset
(:mod:`~matbench.synth.materials.pipeline`) with a summary and a contact sheet
(:mod:`~matbench.synth.materials.report`).

Nothing heavy is imported here: ``diffusers`` (the ``matbench[generate]`` extra) and the
``transformers`` detection models load only when the command runs.
"""

#: The paper's generator and the Grounded-SAM defaults (Hugging Face Hub names); here, so that
#: ``matbench synth --help`` shows them without importing torch.
DEFAULT_DIFFUSION = "stabilityai/stable-diffusion-2-1"
DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"
DEFAULT_SEGMENTER = "facebook/sam-vit-huge"
#: The text-to-image prompt of a triplet (``{object}``, ``{material}``, ``{detail}``, and
#: ``{article}``: "an" before a vowel, else "a").
DEFAULT_TEMPLATE = "a photo of {article} {object} made of {detail} {material}"
