"""FaceNet identity embeddings (Inception-ResNet-v1, 128-D) converted from the Keras h5."""
from .embedder import CROP_SIZE, FACENET_TEMPLATE, FaceEmbedder, prewhiten
from .facenet import EMBEDDING_DIM, InceptionResnetV1

__all__ = ["CROP_SIZE", "EMBEDDING_DIM", "FACENET_TEMPLATE", "FaceEmbedder", "InceptionResnetV1", "prewhiten"]
