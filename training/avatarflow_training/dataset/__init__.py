"""A motion dataset from videos: per clip, per video frame, avatarflow's motion labels and the
audio features the motion engine is conditioned on."""
