"""Training avatarflow's own motion models from talking videos: dataset building (labels from
the pixels with mediapipe, audio features with the audio encoder's engines), training and
evaluation. Not a service: an operator's tool, run as ``avatarflow dataset|train|eval``."""
