"""A tiny V3 node pack that checks the test host itself (not part of fewshot-swap).

Loaded through a symlink in custom_nodes like the real pack, it proves that
symlinked packs load, that V3 custom io types connect, that images make the
round trip through LoadImage/SaveImage, that a node's exception message reaches
`run_prompt`, and what `folder_paths` holds for `fewshot`.
"""
from __future__ import annotations

import logging

import folder_paths
from comfy_api.latest import ComfyExtension, io

ProbeScale = io.Custom("FEWSHOT_HOST_PROBE")


class ProbeMakeScale(io.ComfyNode):
    """Emit a custom-typed value (a plain float) for the next node."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FewShotHostProbeScale", category="fewshot-swap/tests",
            inputs=[io.Float.Input("value", default=1.0, min=-10.0, max=10.0)],
            outputs=[ProbeScale.Output(display_name="scale")],
        )

    @classmethod
    def execute(cls, value: float) -> io.NodeOutput:
        return io.NodeOutput(float(value))


class ProbeInvert(io.ComfyNode):
    """1 - image (times the probe scale's sign); a mask of the mean; raises on request."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FewShotHostProbeInvert", category="fewshot-swap/tests",
            inputs=[
                ProbeScale.Input("scale"),
                io.Image.Input("image"),
                io.String.Input("fail_message", default=""),
            ],
            outputs=[io.Image.Output(display_name="image"), io.Mask.Output(display_name="mask")],
        )

    @classmethod
    def execute(cls, scale: float, image, fail_message: str) -> io.NodeOutput:
        if fail_message:
            raise ValueError(fail_message)
        logging.info("FewShotHostProbeInvert: image %s", tuple(image.shape))
        out = (1.0 - image) if scale >= 0 else image
        return io.NodeOutput(out, out.mean(dim=-1))


class ProbeFolders(io.ComfyNode):
    """Report folder_paths' `fewshot` folders in the prompt's history."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FewShotHostProbeFolders", category="fewshot-swap/tests",
            inputs=[io.Int.Input("nonce", default=0)],
            outputs=[], is_output_node=True,
        )

    @classmethod
    def execute(cls, nonce: int) -> io.NodeOutput:
        names = folder_paths.folder_names_and_paths
        paths = folder_paths.get_folder_paths("fewshot") if "fewshot" in names else []
        return io.NodeOutput(ui={"fewshot_paths": paths})


class ProbeExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [ProbeMakeScale, ProbeInvert, ProbeFolders]


async def comfy_entrypoint() -> ProbeExtension:
    return ProbeExtension()
