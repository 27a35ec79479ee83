"""Face-parsing classes and the MediaPipe face-mesh landmarks that outline them.

The index lists come from MediaPipe's published 468-point face mesh topology
(`mediapipe/python/solutions/face_mesh_connections.py` in the mediapipe wheel:
FACEMESH_FACE_OVAL, *_EYEBROW, *_EYE, *_IRIS, FACEMESH_LIPS), chained here into
ordered polygons. With `refine_landmarks=True` the mesh has 478 points: 468-472
are one iris (centre, then 4 points on its rim), 473-477 the other.

Left/right: MediaPipe names parts from the subject's point of view, so its
"RIGHT_EYE" (33..133) and iris 468 lie on the IMAGE'S LEFT of an upright,
unmirrored face. Our class names use the image's left/right, like the 5-point
landmark convention in docs/ARCHITECTURE.md. Checked on LFW crops: landmark 33
and 468 sit at smaller x than 263 and 473 on every crop.
"""
from __future__ import annotations

PARSE_CLASSES: list[str] = [
    "background", "skin", "brow_l", "brow_r", "eye_l", "eye_r",
    "iris_l", "iris_r", "nose", "lip_upper", "lip_lower", "mouth_inner",
]
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(PARSE_CLASSES)}
NUM_CLASSES = len(PARSE_CLASSES)
# Label value for crops MediaPipe found no face in (use as ignore_index in the loss).
IGNORE_INDEX = 255
N_MESH_LANDMARKS = 478

# Class permutation to apply to a class map after flipping the image horizontally
# (left and right parts swap sides): flipped_map = FLIP_PERMUTATION[map[:, ::-1]].
_FLIP_PAIRS = (("brow_l", "brow_r"), ("eye_l", "eye_r"), ("iris_l", "iris_r"))
FLIP_PERMUTATION: list[int] = list(range(NUM_CLASSES))
for _a, _b in _FLIP_PAIRS:
    FLIP_PERMUTATION[CLASS_INDEX[_a]], FLIP_PERMUTATION[CLASS_INDEX[_b]] = CLASS_INDEX[_b], CLASS_INDEX[_a]

# --- ordered polygons (FACEMESH_* connection chains) --------------------------------

# FACEMESH_FACE_OVAL, clockwise on the image from the top of the forehead (10).
# The mesh stops at mid-forehead, so the skin class stops there too.
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
             400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21,
             54, 103, 67, 109]

# Brows: FACEMESH_*_EYEBROW is two chains, the upper edge (70..107 / 300..336) and the
# lower edge (46..55 / 276..285), paired point by point from the outer end inwards. The
# upper chain then the lower one reversed is a closed band; the renderer widens it a
# little downwards (on LFW the mesh's lower edge sits slightly above the visible one).
BROW_L_UPPER, BROW_L_LOWER = [70, 63, 105, 66, 107], [46, 53, 52, 65, 55]          # MediaPipe RIGHT_EYEBROW
BROW_R_UPPER, BROW_R_LOWER = [300, 293, 334, 296, 336], [276, 283, 282, 295, 285]  # MediaPipe LEFT_EYEBROW
BROW_L = BROW_L_UPPER + BROW_L_LOWER[::-1]
BROW_R = BROW_R_UPPER + BROW_R_LOWER[::-1]

# Eye openings (FACEMESH_*_EYE): outer corner, upper lid to inner corner, lower lid back.
EYE_L = [33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7]      # RIGHT_EYE
EYE_R = [263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249]  # LEFT_EYE

# Irises (refine_landmarks=True): centre, then four rim points (FACEMESH_*_IRIS).
IRIS_L_CENTRE, IRIS_L_RIM = 468, [469, 470, 471, 472]   # MediaPipe RIGHT_IRIS
IRIS_R_CENTRE, IRIS_R_RIM = 473, [474, 475, 476, 477]   # MediaPipe LEFT_IRIS

# Lips (FACEMESH_LIPS): outer and inner contours share the corners' sides, 61/291
# outside and 78/308 inside.
LIPS_OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_OUTER_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
LIPS_INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIPS_INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
LIP_UPPER = LIPS_OUTER_UPPER + LIPS_INNER_UPPER[::-1]
LIP_LOWER = LIPS_OUTER_LOWER + LIPS_INNER_LOWER[::-1]
MOUTH_INNER = LIPS_INNER_UPPER + LIPS_INNER_LOWER[::-1][1:-1]

# Nose: FACEMESH_NOSE only draws the ridge and the nostril base, not an outline, so
# the region is the convex hull of these points (picked on a frontal LFW face plotted
# with indices): ridge 168..2, sides of the bridge (193/417, 122/351, 196/419, 3/248,
# 236/456, 198/420), alae (49/279, 129/358, 64/294) and nostril base (98/327, 97/326).
NOSE_HULL_POINTS = [168, 6, 197, 195, 5, 4, 1, 2,
                    193, 417, 122, 351, 196, 419, 3, 248, 236, 456, 198, 420,
                    49, 279, 129, 358, 64, 294, 98, 327, 97, 326]
