"""The gateway: the public session API (``avatarflow.v1.Avatars``) in front of the pipeline."""
