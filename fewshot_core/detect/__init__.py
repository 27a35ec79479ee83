"""MTCNN face detection in plain torch: boxes, scores and 5 landmarks per face."""
from .detector import FaceDetections, FaceDetector, order_faces

__all__ = ["FaceDetections", "FaceDetector", "order_faces"]
